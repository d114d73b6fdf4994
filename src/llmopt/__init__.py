"""llmopt: take a pretrained model and your data through fine-tuning, evaluation and a report."""

from llmopt.errors import DataError, LlmoptError, ModelError, RecipeError, RunDirError
from llmopt.pipeline import run_recipe
from llmopt.recipe import Recipe, load_recipe, parse_recipe

__version__ = "0.1.0"

__all__ = [
    "DataError", "LlmoptError", "ModelError", "Recipe", "RecipeError", "RunDirError",
    "load_recipe", "parse_recipe", "run_recipe", "__version__",
]
