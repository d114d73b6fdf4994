"""kill -9 during a causal-LM LoRA fine-tune, then --resume: training restarts from the newest complete adapter
checkpoint and ends with the uninterrupted run's dev loss (the crash harness of llmopt.testing.crash)."""

import json

import pytest

from llmopt.testing.crash import crash_and_resume, latest_run, reference_run

RECIPE = """\
version: 1
name: lmcrash
seed: 5
threads: 1
stages:
  - id: clm
    type: finetune
    task: causal_lm
    model: {model}
    text: {text}
    block_size: 16
    lora: {{r: 4, dropout: 0.1}}
    train: {{epochs: 3, batch_size: 4, learning_rate: 1.0e-2, early_stopping_patience: null, logging_steps: 1}}
  - id: report
    type: report
"""


@pytest.fixture(scope="module")
def lm_crash_setup(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("lmcrash")
    text = root / "docs.txt"
    text.write_text("\n\n".join(f"the cat number {i} sat on the mat" for i in range(30)))
    recipe = root / "lmcrash.yaml"
    recipe.write_text(RECIPE.format(model=tiny_llama, text=text))
    reference = reference_run(recipe, root / "reference-runs")
    m = json.loads((latest_run(root / "reference-runs") / "stages/00-clm/metrics.json").read_text())
    return recipe, reference, m["global_steps"] // 3


def test_kill_during_lora_causal_finetune_resumes_from_the_last_adapter_checkpoint(lm_crash_setup, tmp_path):
    recipe, reference, per_epoch = lm_crash_setup
    assert per_epoch >= 2 and reference.quality["00-clm"]["dev_loss"] is not None
    kill_at = 2 * per_epoch + 1  # after the first step of epoch 3: checkpoint-(2*per_epoch) is complete
    res = crash_and_resume(recipe, tmp_path / "runs", reference, fault=f"train.step:{kill_at}")
    assert res.killed and res.landed == "clm", res.summary()
    assert res.files_lost_or_partial == 0, (res.partial, res.partial_after, res.missing)
    assert res.checkpoint_at_kill == 2 * per_epoch and res.resume_actions["clm"] == "resumed"
    assert res.resumed_at_step == 2 * per_epoch and res.steps_trained_now == per_epoch
    assert res.reused_ok, res.reuse_problems
    assert res.resumed_ok, res.mismatch  # the same dev loss as the uninterrupted run
