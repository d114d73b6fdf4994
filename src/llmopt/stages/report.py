"""report stage: one Markdown + self-contained HTML report built only from the stages' metrics.json."""

from __future__ import annotations

from typing import Literal

from llmopt.stages.base import StageConfig, StageContext, StageResult


class ReportConfig(StageConfig):
    """Write <run>/report/report.md and report.html (plots inline) from every finished stage."""

    type: Literal["report"] = "report"


def run(cfg: ReportConfig, ctx: StageContext) -> StageResult:
    from llmopt.pipeline import stage_metrics
    from llmopt.report.render import build_report

    paths = build_report(ctx.run_dir, stage_metrics(ctx.run_dir), ctx.run_dir / "report")
    print(f"[llmopt] report: {paths['html']}", flush=True)
    return StageResult(paths)
