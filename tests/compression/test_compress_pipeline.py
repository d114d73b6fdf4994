"""A tiny compression chain through the real pipeline: finetune → distill → prune → quantize → evaluate → report."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_rows, write_jsonl


def test_compression_chain_end_to_end(tmp_path: Path, tiny_bert: Path):
    from llmopt.pipeline import run_recipe
    from llmopt.rundir import stage_metrics

    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(80))
    recipe = tmp_path / "chain.yaml"
    quick = "train: {max_steps: 3, batch_size: 16, max_length: 32, logging_steps: 1}"
    recipe.write_text(f"""\
version: 1
name: chain
seed: 3
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: teacher
    type: finetune
    model: {tiny_bert}
    {quick}
  - id: student
    type: distill
    teacher: teacher
    layers: [1]
    {quick}
  - id: trim
    type: prune
    model: student
    teacher: teacher
    vocab_trim: true
    ffn_keep: 0.5
    {quick}
  - {{id: int8, type: quantize, model: trim, max_length: 32}}
  - id: evaluate
    type: evaluate
    models: [teacher, student, trim, int8]
    baselines: [majority]
    latency_runs: 10
    warmup: 2
    throughput_batches: 2
    max_length: 32
  - {{id: report, type: report}}
""")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    metrics = {sid: m for sid, _, m in stage_metrics(run_dir)}
    ev = metrics["evaluate"]["models"]
    assert ev["int8"]["runtime"] == "onnxruntime-dynamic_int8"
    assert ev["teacher"]["runtime"] == "pytorch-eager-fp32"
    # every compressed model is gated against its nearest evaluated ancestor
    assert {n: ev[n]["gate"]["parent"] for n in ("student", "trim", "int8")} == {
        "student": "teacher", "trim": "student", "int8": "trim"}
    assert ev["int8"]["gate"]["smaller"] is True
    for n in ("student", "trim", "int8"):  # timed beside its parent, decided on an interval, not one p50 pair
        g = ev[n]["gate"]
        assert g["method"] == "paired" and g["timing"]["runs"] == 10 and g["margin"] == 0.03
        assert g["verdict"] in ("faster", "slower", "no measurable difference") and len(g["ratio_ci"]) == 2
        assert g["passed"] == (g["verdict"] == "faster" and g["smaller"])
    # the teacher's own ONNX Runtime int8 export is a baseline; ONNX Runtime models are gated against it too
    ort = ev["teacher-ort-int8"]
    assert ort["kind"] == "baseline" and ort["runtime"] == "onnxruntime-dynamic_int8" and ort["source"] == "teacher"
    assert ev["int8"]["gate_vs_ort_int8"]["parent"] == "teacher-ort-int8"
    assert "gate_vs_ort_int8" not in ev["student"] and "gate" not in ort
    assert metrics["evaluate"]["ort_int8_baseline"] == "teacher-ort-int8"
    assert ev["int8"]["weights_bytes"] < ev["trim"]["weights_bytes"] < ev["student"]["weights_bytes"]
    assert "gate" not in ev["teacher"] and "gate" not in ev["majority"]
    assert json.loads((run_dir / "stages" / "04-int8" / "artifacts" / "model" / "onnx_model.json").read_text())[
        "scheme"] == "dynamic_int8"
    assert (run_dir / "report" / "report.html").is_file()
    md = (run_dir / "report" / "report.md").read_text()
    assert "Speed/size gates" in md and "teacher-ort-int8" in md
