import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.errors import RecipeError
from llmopt.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
name: t
seed: 7
stages:
  - id: data
    type: data
    source: {builtin: rotten_tomatoes}
  - id: ft
    type: finetune
    data: data
    train: {epochs: 1}
  - id: ev
    type: evaluate
    models: [ft]
  - id: report
    type: report
"""


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages and recipe.name


def test_defaults_are_filled_in():
    r = parse_recipe(GOOD)
    ft = r.stage("ft")
    t = ft.train
    assert (t.learning_rate, t.warmup_ratio, t.weight_decay, t.save_total_limit, t.epochs) == (2e-5, 0.1, 0.01, 2, 1)
    assert t.scheduler == "linear" and t.early_stopping_patience == 2 and t.group_by_length
    assert r.seed == 7
    assert "learning_rate: 2.0e-05" in r.resolved_yaml()


def test_typo_in_stage_key_gives_did_you_mean_with_line():
    text = GOOD.replace("epochs: 1", "epohcs: 1")
    with pytest.raises(RecipeError) as e:
        parse_recipe(text, source="r.yaml")
    msg = str(e.value)
    assert "r.yaml:11" in msg and "stages[1].train.epohcs" in msg and "did you mean 'epochs'" in msg


def test_typo_in_nested_key():
    text = GOOD.replace("{builtin: rotten_tomatoes}", "{builtn: rotten_tomatoes}")
    with pytest.raises(RecipeError, match="unknown key 'builtn'.*did you mean 'builtin'"):
        parse_recipe(text)


def test_unknown_stage_type_did_you_mean():
    with pytest.raises(RecipeError, match=r"r.yaml:9: stages\[1\].type: unknown stage type 'finetuen'.*did you mean 'finetune'"):
        parse_recipe(GOOD.replace("type: finetune", "type: finetuen"), source="r.yaml")


def test_unknown_top_level_key():
    with pytest.raises(RecipeError, match="unknown key 'sed'.*did you mean 'seed'"):
        parse_recipe(GOOD.replace("seed: 7", "sed: 7"))


def test_bad_value_type_names_key():
    with pytest.raises(RecipeError, match=r"stages\[1\].train.epochs.*'ft'"):
        parse_recipe(GOOD.replace("epochs: 1", "epochs: lots"))


def test_duplicate_ids_rejected():
    with pytest.raises(RecipeError, match="duplicate stage id 'ft'"):
        parse_recipe(GOOD.replace("id: ev", "id: ft"))


def test_reference_to_later_stage_rejected():
    text = GOOD.replace("models: [ft]", "models: [ft]\n    data: report")
    with pytest.raises(RecipeError, match="runs later"):
        parse_recipe(text)


def test_reference_to_unknown_stage_did_you_mean():
    with pytest.raises(RecipeError, match="did you mean 'data'"):
        parse_recipe(GOOD.replace("data: data", "data: dta"))


def test_model_must_be_stage_or_existing_folder():
    with pytest.raises(RecipeError, match="neither an earlier stage id"):
        parse_recipe(GOOD.replace("models: [ft]", "models: [no/such/folder]"))


COMPRESS = GOOD.replace("  - id: ev", "  - {id: st, type: distill, teacher: TEACHER, layers: [0]}\n  - id: ev")


def test_teacher_may_be_a_stage_or_a_folder_and_a_typo_gets_did_you_mean(tiny_bert):
    parse_recipe(COMPRESS.replace("TEACHER", "ft"))
    parse_recipe(COMPRESS.replace("TEACHER", str(tiny_bert)))
    with pytest.raises(RecipeError, match=r"'fft' is neither an earlier stage id \(did you mean 'ft'\?\)"):
        parse_recipe(COMPRESS.replace("TEACHER", "fft"))
    with pytest.raises(RecipeError, match="runs later"):
        parse_recipe(COMPRESS.replace("TEACHER", "ev"))


def test_invalid_yaml_names_line():
    with pytest.raises(RecipeError, match=r"r.yaml:\d+: invalid YAML"):
        parse_recipe("version: 1\nstages: [\n  - {", source="r.yaml")


def test_yaml_tags_cannot_run_code():
    with pytest.raises(RecipeError, match="invalid YAML"):
        parse_recipe("!!python/object/apply:os.system ['echo hi']")


def test_overrides_are_typed_and_applied():
    r = parse_recipe(GOOD, overrides=["stages.ft.train.epochs=2.5", "seed=3", "stages.ft.train.scheduler=cosine"])
    assert r.stage("ft").train.epochs == 2.5 and r.seed == 3 and r.stage("ft").train.scheduler == "cosine"


def test_override_of_nested_field():
    r = parse_recipe(GOOD, overrides=["stages.data.split.dev=0.2"])
    assert r.stage("data").split.dev == 0.2


def test_override_unknown_stage_did_you_mean():
    with pytest.raises(RecipeError, match="no stage with id 'fft'.*did you mean 'ft'"):
        parse_recipe(GOOD, overrides=["stages.fft.train.epochs=2"])


def test_override_unknown_field_is_caught():
    with pytest.raises(RecipeError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        parse_recipe(GOOD, overrides=["stages.ft.train.epoch=2"])


def test_old_flat_training_field_points_at_the_train_block():
    with pytest.raises(RecipeError, match=r"r.yaml:\d+: stages\[1\].learning_rate.*did you mean 'train.learning_rate'"):
        parse_recipe(GOOD.replace("train: {epochs: 1}", "learning_rate: 1.0e-4"), source="r.yaml")


def test_partial_train_block_keeps_the_stage_defaults():
    text = GOOD.replace("  - id: ev", "  - {id: d, type: distill, teacher: ft, layers: [0], train: {epochs: 1}}\n  - id: ev")
    d = parse_recipe(text).stage("d")
    assert d.train.learning_rate == 1e-4 and d.train.epochs == 1  # distill's own lr default survives


def test_override_without_equals():
    with pytest.raises(RecipeError, match="expected key=value"):
        parse_recipe(GOOD, overrides=["stages.ft.train.epochs"])


def test_validate_does_not_import_torch():
    code = (
        "import sys; from llmopt.cli import main; rc = main(['validate', 'recipes/default.yaml']); "
        "assert rc == 0; assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_misspelt_type_key_is_named():
    with pytest.raises(RecipeError, match=r"r.yaml:\d+: stages\[2\]: no `type:` \('tpye' looks like a typo of 'type'\)"):
        parse_recipe(GOOD.replace("    type: evaluate", "    tpye: evaluate"), source="r.yaml")
