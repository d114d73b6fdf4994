"""finetune task causal_lm with general_text: held-out domain and general-text perplexity before and after, with
intervals, in the metrics and the report (tiny Llama through the real pipeline)."""

from __future__ import annotations

import json
import math

import pytest

from llmopt.pipeline import run_recipe


def test_causal_lm_reports_domain_and_general_perplexity_before_and_after(tmp_path, tiny_llama):
    text = tmp_path / "domain.txt"
    text.write_text("\n\n".join(f"the senate passed bill number {i} and the house agreed to it" for i in range(60)))
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"a long history of the mountain railway, chapter {i}" for i in range(12)))
    recipe = tmp_path / "clm.yaml"
    recipe.write_text(f"""\
version: 1
name: clm
seed: 3
threads: 1
stages:
  - id: adapt
    type: finetune
    task: causal_lm
    model: {tiny_llama}
    text: {text}
    general_text: {general}
    block_size: 32
    train: {{epochs: 3, batch_size: 8, learning_rate: 1.0e-2, warmup_ratio: 0.0, logging_steps: 1}}
  - {{id: report, type: report}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = json.loads((run_dir / "stages/00-adapt/metrics.json").read_text())
    d = m["domain_eval"]
    dom, gen = d["domain"], d["general"]
    assert dom["after"]["ppl"] < 0.5 * dom["before"]["ppl"] and dom["change"]["verdict"] == "lower"
    assert dom["change"]["ppl_ratio"] == pytest.approx(math.exp(dom["after"]["mean_nll"] - dom["before"]["mean_nll"]))
    assert dom["before"]["documents"] == m["dev_documents"] and gen["before"]["documents"] == 12
    assert gen["after"]["ppl"] != gen["before"]["ppl"]
    for x in (dom["before"], dom["after"], gen["before"], gen["after"]):
        assert x["ppl_ci"][0] <= x["ppl"] <= x["ppl_ci"][1] and x["ci_over"] == "documents"
    report = (run_dir / "report" / "report.md").read_text()
    assert "| domain |" in report and "| general |" in report and "perplexity before [95% CI]" in report
