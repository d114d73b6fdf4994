"""The stage table: every stage type is a typed config plus one `run(cfg, ctx)` function.

Stage modules import only pydantic at module level, so `llmopt validate` never loads torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmopt.stages import data, distill, evaluate, finetune, prune, quantize, report, search
from llmopt.stages.base import StageConfig, StageContext, StageResult


@dataclass(frozen=True)
class Stage:
    config: type[StageConfig]
    run: Callable[[StageConfig, StageContext], StageResult]
    reads_all_stages: bool = False  # reruns when any earlier stage changes


STAGES: dict[str, Stage] = {
    "data": Stage(data.DataConfig, data.run),
    "finetune": Stage(finetune.FinetuneConfig, finetune.run),
    "distill": Stage(distill.DistillConfig, distill.run),
    "prune": Stage(prune.PruneConfig, prune.run),
    "quantize": Stage(quantize.QuantizeConfig, quantize.run),
    "search": Stage(search.SearchConfig, search.run),
    "evaluate": Stage(evaluate.EvaluateConfig, evaluate.run),
    "report": Stage(report.ReportConfig, report.run, reads_all_stages=True),
}

__all__ = ["STAGES", "Stage", "StageConfig", "StageContext", "StageResult"]
