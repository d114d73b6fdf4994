"""SIGKILL `llmopt run` at fault points and random moments, resume, and compare with an uninterrupted run."""

import random
from pathlib import Path

import pytest

from llmopt.testing.crash import crash_and_resume, partial_files, timed_reference
from tests.conftest import make_rows, write_jsonl

RECIPE = """\
version: 1
name: crash
seed: 5
threads: 1
stages:
  - id: data
    type: data
    source: {{path: {data}}}
  - id: finetune
    type: finetune
    model: {model}
    train:
      epochs: 3
      batch_size: 16
      learning_rate: 1.0e-3
      max_length: 32
      early_stopping_patience: null
  - id: quantize
    type: quantize
    model: finetune
    max_length: 32
    check_rows: 10
  - id: evaluate
    type: evaluate
    models: [finetune, quantize]
    latency_runs: 10
    warmup: 1
    throughput_batches: 1
    max_length: 32
  - id: report
    type: report
"""


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("crash")
    data = write_jsonl(root / "d.jsonl", make_rows(60, seed=1))
    recipe = root / "crash.yaml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert))
    reference, wall = timed_reference(recipe, root / "reference-runs")
    return recipe, reference, wall, root


# data loading, a write cut off before its rename, between a checkpoint and its checksums,
# after a stage's metrics but before DONE, while quantizing, and in the middle of writing the report
FAULTS = ["data.read:1", "atomic.before_rename:4", "ckpt.saved:2", "stage.end:2", "quantize.write:1",
          "report.write:1"]


@pytest.mark.parametrize("fault", FAULTS)
def test_kill_at_fault_point_then_resume(crash_setup, fault, tmp_path):
    recipe, reference, _, _ = crash_setup
    res = crash_and_resume(recipe, tmp_path / "runs", reference, fault=fault)
    assert res.killed, f"the fault point {fault} was never reached"
    assert res.partial == []
    assert res.resumed_ok, res.mismatch


def test_kill_at_a_random_moment_then_resume(crash_setup, tmp_path):
    recipe, reference, wall, _ = crash_setup
    t = random.Random(7).uniform(0.3 * wall, 0.8 * wall)
    res = crash_and_resume(recipe, tmp_path / "runs", reference, kill_after=t)
    assert res.partial == []
    assert res.resumed_ok, res.mismatch


def test_partial_file_detector_catches_a_cut_file(crash_setup):
    """The harness must be able to fail: a truncated artifact in a finished run is reported."""
    _, _, _, root = crash_setup
    run_dir = next((root / "reference-runs").glob("*/*"))
    assert partial_files(run_dir) == []
    preds = next(run_dir.glob("stages/*-evaluate/artifacts/predictions/finetune.jsonl"))
    original = preds.read_bytes()
    try:
        preds.write_bytes(original[: len(original) // 2])
        found = partial_files(run_dir)
        assert any("finetune.jsonl" in f for f in found)
    finally:
        preds.write_bytes(original)


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path, tiny_bert, capsys):
    from llmopt.pipeline import run_recipe
    from llmopt.training.checkpoints import last_good_checkpoint

    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60, seed=1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert))
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    ft = next(run_dir.glob("stages/*-finetune"))
    ckpts = ft / "checkpoints"
    names = sorted((p.name for p in ckpts.iterdir()), key=lambda n: int(n.split("-")[1]))
    assert len(names) == 2 and names[-1] == "checkpoint-9"  # save_total_limit 2: the best and the last
    older = names[0]
    # flip bytes in the newest checkpoint's weights, keeping the size
    w = ckpts / "checkpoint-9" / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-100:] = bytes(100)
    w.write_bytes(bytes(blob))
    capsys.readouterr()
    assert last_good_checkpoint(ckpts) == ckpts / older
    err = capsys.readouterr().err
    assert "checkpoint-9 is unusable" in err and "different sha256" in err
    assert not (ckpts / "checkpoint-9").exists()
    # a truncated file is named by its size
    w6 = ckpts / older / "optimizer.pt"
    w6.write_bytes(w6.read_bytes()[:10])
    assert last_good_checkpoint(ckpts, remove_bad=False) is None
    assert "10 bytes" in capsys.readouterr().err


def test_corrupted_artifact_makes_the_stage_run_again(tmp_path, tiny_bert, capsys):
    from llmopt.pipeline import run_recipe

    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60, seed=1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert).replace("epochs: 3", "epochs: 1"))
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs")
    model = next(run_dir.glob("stages/*-finetune")) / "artifacts/model/model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    capsys.readouterr()
    run_recipe(recipe, runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    assert "finetune (finetune):" in err and "(truncated or altered) — running again" in err
    assert partial_files(run_dir) == []


def test_second_run_on_same_dir_is_refused(tmp_path, tiny_bert):
    import os

    from llmopt.testing.crash import run_cli

    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60, seed=1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert))
    run_dir = tmp_path / "runs" / "crash" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.resolved.yaml").write_text("x: 1\n")
    (run_dir / ".lock").write_text(str(os.getppid()))  # held by a live process
    out = run_cli(["run", str(recipe), "--resume", str(run_dir)])
    assert out.returncode == 2 and "another llmopt run" in out.stderr and "Traceback" not in out.stderr
    (run_dir / ".lock").write_text("999999999")  # its owner is dead: taken over
    out = run_cli(["run", str(recipe), "--resume", str(run_dir), "stages.finetune.train.epochs=1"])
    assert out.returncode == 0, out.stderr
    assert not (run_dir / ".lock").exists()
