"""The stage table: every stage type is a typed config, one `run(cfg, ctx)` and one report section.

Stage modules import only pydantic at module level, so `llmopt validate` never loads torch. Adding a stage
type = one config class + one `run` + one line here + its `section(sid, metrics, doc)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmopt.stages import (augment, compare, curate, data, distill, evaluate, finetune, prompt, prune, quantize, report,
                           search)
from llmopt.stages import tokenizer
from llmopt.stages.base import StageConfig, StageContext, StageResult


@dataclass(frozen=True)
class Stage:
    config: type[StageConfig]
    run: Callable[[Any, StageContext], StageResult]
    section: Callable[[str, dict, Any], None]  # (stage id, its metrics.json, report Doc) → adds its section
    reads_all_stages: bool = False  # reruns when any earlier stage changes


STAGES: dict[str, Stage] = {
    "data": Stage(data.DataConfig, data.run, data.section),
    "curate": Stage(curate.CurateConfig, curate.run, curate.section),
    "finetune": Stage(finetune.FinetuneConfig, finetune.run, finetune.section),
    "augment": Stage(augment.AugmentConfig, augment.run, augment.section),
    "tokenizer": Stage(tokenizer.TokenizerConfig, tokenizer.run, tokenizer.section),
    "compare": Stage(compare.CompareConfig, compare.run, compare.section),
    "distill": Stage(distill.DistillConfig, distill.run, distill.section),
    "prune": Stage(prune.PruneConfig, prune.run, prune.section),
    "quantize": Stage(quantize.QuantizeConfig, quantize.run, quantize.section),
    "search": Stage(search.SearchConfig, search.run, search.section),
    "evaluate": Stage(evaluate.EvaluateConfig, evaluate.run, evaluate.section),
    "prompt": Stage(prompt.PromptConfig, prompt.run, prompt.section),
    "report": Stage(report.ReportConfig, report.run, report.section, reads_all_stages=True),
}

__all__ = ["STAGES", "Stage", "StageConfig", "StageContext", "StageResult"]
