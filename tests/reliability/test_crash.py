"""SIGKILL `llmopt run` at fault points and random moments, resume, and prove what the resume reused.

Matching metrics alone would pass if the resume started from scratch (the runs are deterministic), so each
kill also asserts from events.jsonl that the stages finished before it were skipped, and from the training
stage's metrics that it restarted from the checkpoint that existed at the kill.
"""

import random
import shutil

import pytest

from llmopt.testing.crash import TINY_RECIPE as RECIPE
from llmopt.testing.crash import CrashResult, _judge_reuse, crash_and_resume, partial_files, reference_run
from tests.conftest import make_rows, write_jsonl


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("crash")
    data = write_jsonl(root / "d.jsonl", make_rows(60, seed=1))
    recipe = root / "crash.yaml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert))
    reference = reference_run(recipe, root / "reference-runs")
    return recipe, reference, root


# fault -> (stages finished at the kill, so skipped by the resume; newest complete checkpoint at the kill,
# the step training must resume at; steps trained after the resume). None: not a point inside training.
FAULTS = {
    # a write cut off before its rename (the 4th atomic write of the run)
    "atomic.before_rename:4": None,
    # checkpoint-6 written, its checksums not: it is discarded and training resumes from checkpoint-3
    "ckpt.saved:2": (["data"], 3, 6),
    # between two checkpoints: after step 7, checkpoint-6 complete; 3 of the 9 steps are trained again
    "train.step:7": (["data"], 6, 3),
    # fine-tune's metrics written but not its DONE: the stage resumes at its last checkpoint, training 0 steps
    "stage.end:2": (["data"], 9, 0),
    # in the middle of writing the report: every earlier stage is reused
    "report.write:1": (["data", "finetune", "quantize", "evaluate"], None, None),
}
# (bench/crash.py runs every fault point at several counts, quantize.write among them, and more timer kills)


def _check(res: CrashResult) -> None:
    assert res.killed, f"{res.point}: the process was not killed (it finished first, or the point was never reached)"
    assert res.files_lost_or_partial == 0, (res.partial, res.partial_after, res.missing)
    assert res.resumed_ok, res.mismatch
    assert res.reused_ok, res.reuse_problems
    assert res.redone_s is not None and res.landed


@pytest.mark.parametrize("fault", list(FAULTS))
def test_kill_at_fault_point_then_resume(crash_setup, fault, tmp_path):
    recipe, reference, _ = crash_setup
    res = crash_and_resume(recipe, tmp_path / "runs", reference, fault=fault)
    _check(res)
    if FAULTS[fault] is None:
        return
    skipped, checkpoint, trained_now = FAULTS[fault]
    assert res.skipped == skipped, res.resume_actions
    assert res.checkpoint_at_kill == checkpoint
    if checkpoint is not None:  # the fine-tune stage was interrupted and restarted from that checkpoint
        assert res.landed == "finetune" and res.resume_actions["finetune"] == "resumed"
        assert res.resumed_at_step == checkpoint > 0
        assert res.steps_trained_now == trained_now < res.global_steps == 9


def test_kill_at_a_random_moment_then_resume(crash_setup, tmp_path):
    recipe, reference, _ = crash_setup
    t = random.Random(7).uniform(0.3 * reference.wall_s, 0.6 * reference.wall_s)
    res = crash_and_resume(recipe, tmp_path / "runs", reference, kill_after=t)
    print(f"timer kill at {t:.1f}s landed: {res.landed}, checkpoint at the kill: {res.checkpoint_at_kill}, "
          f"skipped on resume: {res.skipped}, redone {res.redone_s}s")
    _check(res)


def test_reuse_judge_catches_a_rerun_from_scratch(tmp_path):
    """The harness must be able to fail: a resume that ran finished stages again or ignored a checkpoint."""
    res = CrashResult(point="x", killed=True, done_at_kill=["data"], checkpoint_at_kill=6,
                      resume_actions={"data": "started", "finetune": "started"})
    _judge_reuse(res, "finetune", {}, {"data": 0.1, "finetune": 5.0})
    assert not res.reused_ok
    assert any("data was finished at the kill" in p for p in res.reuse_problems)
    assert any("not 'resumed'" in p for p in res.reuse_problems)

    # the stage was kept, but training started again at step 0 although checkpoint-6 was complete
    (tmp_path / "metrics.json").write_text('{"resumed_at_step": 0, "steps_trained_now": 9, "global_steps": 9}')
    res = CrashResult(point="y", killed=True, done_at_kill=["data"], checkpoint_at_kill=6,
                      resume_actions={"data": "skipped", "finetune": "resumed"})
    _judge_reuse(res, "finetune", {"finetune": tmp_path}, {"finetune": 5.0})
    assert not res.reused_ok and any("resumed at step 0" in p for p in res.reuse_problems)


def test_partial_file_detector_catches_a_cut_file(crash_setup):
    """The harness must be able to fail: a truncated artifact in a finished run is reported."""
    _, _, root = crash_setup
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


def test_corrupted_checkpoint_falls_back_to_previous(crash_setup, tmp_path, capsys):
    from llmopt.training.checkpoints import last_good_checkpoint

    _, _, root = crash_setup
    reference_dir = next((root / "reference-runs").glob("*/*"))
    ckpts = shutil.copytree(next(reference_dir.glob("stages/*-finetune")) / "checkpoints", tmp_path / "checkpoints")
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


def test_corrupted_artifact_makes_the_stage_run_again(crash_setup, tmp_path, capsys):
    from llmopt.pipeline import run_recipe
    from llmopt.testing.crash import events

    recipe, _, root = crash_setup
    reference_dir = next((root / "reference-runs").glob("*/*"))
    run_dir = shutil.copytree(reference_dir, tmp_path / "runs" / reference_dir.parent.name / reference_dir.name)
    model = next(run_dir.glob("stages/*-finetune")) / "artifacts/model/model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    before = len(events(run_dir))
    capsys.readouterr()
    run_recipe(recipe, runs_root=tmp_path / "runs", resume=str(run_dir))
    err = capsys.readouterr().err
    assert "finetune (finetune):" in err and "(truncated or altered) — running again" in err
    assert partial_files(run_dir) == []
    # only that stage ran again (from scratch: its folder was not to be trusted); the others were reused
    actions = {e["stage"]: e["action"] for e in events(run_dir)[before:] if e["action"] != "done"}
    assert actions == {"data": "skipped", "finetune": "started", "quantize": "skipped", "evaluate": "skipped",
                       "report": "skipped"}


def test_second_run_on_same_dir_is_refused(tmp_path, tiny_bert):
    import os

    from llmopt.testing.crash import run_cli

    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60, seed=1))
    recipe = tmp_path / "r.yaml"  # the data stage alone: the lock is what is tested
    recipe.write_text(RECIPE.format(data=data, model=tiny_bert).split("  - id: finetune")[0])
    run_dir = tmp_path / "runs" / "crash" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.resolved.yaml").write_text("x: 1\n")
    (run_dir / ".lock").write_text(str(os.getppid()))  # held by a live process
    out = run_cli(["run", str(recipe), "--resume", str(run_dir)])
    assert out.returncode == 2 and "another llmopt run" in out.stderr and "Traceback" not in out.stderr
    (run_dir / ".lock").write_text("999999999")  # its owner is dead: taken over
    out = run_cli(["run", str(recipe), "--resume", str(run_dir)])
    assert out.returncode == 0, out.stderr
    assert not (run_dir / ".lock").exists()
