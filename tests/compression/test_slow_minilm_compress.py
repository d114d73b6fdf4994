"""Real model, real data: MiniLM fine-tuned on 400 Rotten Tomatoes rows, distilled, pruned, trimmed, int8."""

from __future__ import annotations

import pytest

RECIPE = """\
version: 1
name: slow-compress
seed: 42
stages:
  - id: data
    type: data
    source: {builtin: rotten_tomatoes}
    max_train_rows: 400
    max_dev_rows: 100
    max_test_rows: 300
  - id: teacher
    type: finetune
    model: {builtin: minilm}
    train:
      learning_rate: 1.0e-4
      epochs: 3
      batch_size: 16
      max_length: 64
  - {id: teacher_int8, type: quantize, model: teacher, max_length: 64}
  - id: student
    type: distill
    teacher: teacher
    layers: [0, 2, 4]
    unlabelled: false
    train:
      epochs: 2
      batch_size: 16
      max_length: 64
  - id: small
    type: prune
    model: student
    teacher: teacher
    ffn_keep: 0.5
    vocab_trim: true
    train:
      epochs: 1
      batch_size: 16
      max_length: 64
  - {id: small_int8, type: quantize, model: small, max_length: 64}
  - id: evaluate
    type: evaluate
    models: [teacher, teacher_int8, student, small, small_int8]
    baselines: [majority]
    max_length: 64
    latency_runs: 50
"""


@pytest.mark.slow
def test_minilm_compression_chain_is_smaller_faster_and_still_learns(tmp_path):
    from llmopt.pipeline import run_recipe
    from llmopt.rundir import stage_metrics

    recipe = tmp_path / "slow.yaml"
    recipe.write_text(RECIPE)
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    m = {sid: met for sid, _, met in stage_metrics(run_dir)}
    ev = m["evaluate"]["models"]
    # the int8 export of the real teacher keeps its predictions on dev
    assert m["teacher_int8"]["agreement_with_fp32"] >= 0.95
    # real shrinkage: the 3-layer student loses over 40% of its parameters to FFN pruning and vocabulary trimming
    assert m["small"]["params_after"] < 0.6 * m["small"]["params_before"]
    assert m["small"]["vocab_after"] < 15000
    assert ev["teacher"]["weights_bytes"] / ev["small_int8"]["weights_bytes"] > 7  # int8 file vs fp32 teacher
    # faster than the teacher in both runtimes, timed by the same harness in one stage
    assert ev["small_int8"]["gate"]["passed"] and ev["small_int8"]["gate"]["parent"] == "small"
    assert ev["small_int8"]["latency_b1_p50_ms"] < ev["teacher_int8"]["latency_b1_p50_ms"]
    assert ev["small_int8"]["latency_b1_p50_ms"] < ev["teacher"]["latency_b1_p50_ms"] / 4
    # still a sentiment model: well above the majority class
    assert ev["small_int8"]["accuracy"] > ev["majority"]["accuracy"] + 0.1
