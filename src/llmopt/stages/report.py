"""report stage: one Markdown + self-contained HTML report built only from the stages' metrics.json."""

from __future__ import annotations

from typing import Any, Literal

from llmopt.stages.base import StageConfig, StageContext, StageResult


class ReportConfig(StageConfig):
    """Write <run>/report/report.md and report.html (plots inline) from every finished stage."""

    type: Literal["report"] = "report"


def run(cfg: ReportConfig, ctx: StageContext) -> StageResult:
    """Build the report from the metrics.json of every finished stage (the same as `llmopt report RUN_DIR`)."""
    from llmopt.report.render import build_report

    return StageResult(build_report(ctx.run_dir))


def section(sid: str, m: dict, doc: Any) -> None:
    """The report does not describe itself."""
