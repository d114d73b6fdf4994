"""A real tiny run (2-layer BERT, 60 rows): its report opens with the recommendation and every table fits."""

from __future__ import annotations

import json
from pathlib import Path

from llmopt.pipeline import run_recipe
from llmopt.report.answer import recommend
from tests.conftest import write_tiny_quantize_recipe
from tests.report.test_render import MAX_COLUMNS, table_widths


def test_report_of_a_tiny_run_opens_with_the_recommendation(tmp_path: Path, tiny_bert: Path, tiny_data: Path):
    recipe = write_tiny_quantize_recipe(tmp_path / "tiny.yaml", tiny_data, tiny_bert, check_rows=10)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    ev = json.loads(next((run_dir / "stages").glob("*-evaluate/metrics.json")).read_text())
    rec = recommend(ev)
    md = (run_dir / "report" / "report.md").read_text()
    lines = [line for line in md.splitlines() if line]
    assert lines[0] == "# llmopt report — tiny"
    assert lines[1].startswith("## The answer: ") and rec["name"] in lines[1]
    assert lines[2].startswith(rec["name"])  # the first sentence is about the recommended model
    assert "Rule: the fastest model" in md and md.index("Rule:") < md.index("## Data (data)")
    assert "quantize" in rec["candidates"]  # the quantized model was weighed against the rule
    html = (run_dir / "report" / "report.html").read_text()
    assert html.index("The answer: ") < html.index("Data (data)")
    assert max(table_widths(html)) <= MAX_COLUMNS
