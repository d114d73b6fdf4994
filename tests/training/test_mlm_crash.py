"""kill -9 during a masked-LM continued pretraining, then --resume: training restarts from the newest complete
checkpoint and ends with the uninterrupted run's dev MLM loss (the crash harness of llmopt.testing.crash)."""

import json

import pytest

from llmopt.testing.crash import crash_and_resume, latest_run, reference_run

RECIPE = """\
version: 1
name: mlmcrash
seed: 5
threads: 1
stages:
  - id: adapt
    type: finetune
    task: mlm
    model: {model}
    text: {text}
    general_text: {general}
    eval_max_tokens: 200
    train: {{epochs: 3, batch_size: 8, learning_rate: 3.0e-3, max_length: 24, early_stopping_patience: null,
             logging_steps: 1}}
  - id: report
    type: report
"""


@pytest.fixture(scope="module")
def mlm_crash_setup(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("mlmcrash")
    text, general = root / "docs.txt", root / "general.txt"
    text.write_text("\n\n".join(f"the cat number {i} sat on the mat by the door" for i in range(40)))
    general.write_text("\n\n".join(f"a history of the valley, part {i}" for i in range(10)))
    recipe = root / "mlmcrash.yaml"
    recipe.write_text(RECIPE.format(model=tiny_bert, text=text, general=general))
    reference = reference_run(recipe, root / "reference-runs")
    m = json.loads((latest_run(root / "reference-runs") / "stages/00-adapt/metrics.json").read_text())
    return recipe, reference, m["global_steps"] // 3, m


def test_kill_during_mlm_pretraining_resumes_from_the_last_checkpoint(mlm_crash_setup, tmp_path):
    recipe, reference, per_epoch, m = mlm_crash_setup
    assert per_epoch >= 2 and m["dev_loss"] < m["dev_loss_before"]
    kill_at = 2 * per_epoch + 1  # after the first step of epoch 3: checkpoint-(2*per_epoch) is complete
    res = crash_and_resume(recipe, tmp_path / "runs", reference, fault=f"train.step:{kill_at}")
    assert res.killed and res.landed == "adapt", res.summary()
    assert res.files_lost_or_partial == 0, (res.partial, res.partial_after, res.missing)
    assert res.resume_actions["adapt"] == "resumed" and res.resumed_at_step == 2 * per_epoch
    assert res.steps_trained_now == per_epoch
    assert res.resumed_ok, res.mismatch  # the same dev loss as the uninterrupted run
    resumed = json.loads((latest_run(tmp_path / "runs") / "stages/00-adapt/metrics.json").read_text())
    assert resumed["dev_loss_before"] == m["dev_loss_before"]  # kept from before the kill
    assert resumed["domain_eval"]["general"]["after"]["ppl"] == pytest.approx(
        m["domain_eval"]["general"]["after"]["ppl"], rel=1e-4)
