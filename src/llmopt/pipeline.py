"""Run a recipe: create or resume a run directory, run each stage unless already done."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from llmopt import console, distributed, faults, rundir
from llmopt.errors import LlmoptError
from llmopt.fsutil import atomic_write_json, remove_stale_temps
from llmopt.recipe import Recipe, load_recipe
from llmopt.stages import STAGES
from llmopt.stages.base import Inputs, StageContext


def log(msg: str) -> None:
    """A line for the user (above the live line during a run; also in run.log)."""
    console.note(msg)


def run_recipe(
    recipe_path: Path,
    overrides: list[str] | None = None,
    runs_root: Path = Path("runs"),
    resume: str | None = None,
    argv: list[str] | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Run every stage of the recipe; return the run directory.

    Under a launcher of several ranks (torchrun), rank 0 runs the recipe and the other ranks serve its trainings
    (`llmopt.distributed`); every rank returns the same run directory."""
    distributed.init()
    if not distributed.is_main():
        run_dir = distributed.serve()
        if run_dir is None:  # pragma: no cover - rank 0 stopped before choosing one, without an error
            raise distributed.DistributedError("rank 0 stopped before it chose a run directory")
        return run_dir
    try:
        run_dir = _run_recipe(recipe_path, overrides, runs_root, resume, argv, allow_pickle)
    except BaseException as e:
        distributed.stop(error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        raise
    distributed.stop(run_dir)
    return run_dir


def _run_recipe(recipe_path: Path, overrides: list[str] | None, runs_root: Path, resume: str | None,
                argv: list[str] | None, allow_pickle: bool) -> Path:
    recipe = load_recipe(recipe_path, overrides, allow_pickle=allow_pickle)
    created = False
    if resume == "latest":
        run_dir = rundir.latest_run_dir(runs_root, recipe.name)
        if run_dir is None:
            log(f"no earlier run of '{recipe.name}' under {runs_root}; starting a new one")
            run_dir, created = rundir.new_run_dir(runs_root, recipe.name), True
    elif resume:
        run_dir = rundir.check_run_dir(Path(resume))
    else:
        run_dir, created = rundir.new_run_dir(runs_root, recipe.name), True
    distributed.send(("run_dir", str(run_dir)))  # the other ranks use the same one (never their own timestamp)
    try:
        with rundir.RunLock(run_dir), console.capture(run_dir):
            execute(recipe, Path(recipe_path).read_text(encoding="utf-8"), run_dir, argv or [], allow_pickle)
    except LlmoptError as e:
        # a user error: leave no half-made run behind (a run with finished stages stays resumable; so does one
        # whose training lost a rank: its checkpoints are worth resuming)
        lost_rank = isinstance(e, distributed.DistributedError)
        if created and not lost_rank and not any((run_dir / "stages").glob("*/DONE")):
            shutil.rmtree(run_dir, ignore_errors=True)
            _remove_if_empty(run_dir.parent)
            log(f"removed {run_dir}: no stage had finished")  # it was announced above; say it is gone
        raise
    return run_dir


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def input_hashes(inputs: Inputs, stage_ids: set[str]) -> dict[str, str]:
    """sha256 of every file and model folder a stage reads that is not another stage's output."""
    from llmopt.integrity import content_hash
    from llmopt.models import resolve_model_ref

    out: dict[str, str] = {}
    for ref in inputs.files + [m for m in inputs.models if m not in stage_ids]:
        try:
            path = resolve_model_ref(ref, {}) if ref in inputs.models else Path(ref)
        except LlmoptError:
            continue  # a missing builtin: the stage itself reports it
        if path.exists():
            out[ref] = content_hash(path)
    return out


def record_event(run_dir: Path, **event: object) -> None:
    """One line per stage decision (ran / skipped / resumed) in run_dir/events.jsonl, for people and tests."""
    import json

    from llmopt.rundir import _now

    with open(Path(run_dir) / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"at": _now(), "t": round(time.time(), 3), "pid": os.getpid(), **event}) + "\n")


def execute(recipe: Recipe, recipe_text: str, run_dir: Path, argv: list[str], allow_pickle: bool = False) -> None:
    """Run the stages in order; a stage whose DONE, fingerprint and files still match is skipped."""
    from llmopt import runtime

    runtime.offline_env()
    for p in remove_stale_temps(run_dir):
        log(f"removed a temp file left by an interrupted run: {p.relative_to(run_dir)}")
    threads = recipe.threads or runtime.default_threads()
    rundir.write_recipe_files(run_dir, recipe_text, recipe.resolved_yaml())
    ids = {s.id for s in recipe.stages}
    data_files = [Path(f) for s in recipe.stages for f in s.inputs().files]
    rundir.write_manifest(run_dir, recipe.seed, data_files, argv)
    log(f"run directory: {run_dir}  (library output: run.log there)")
    if distributed.active():
        log(f"{distributed.world_size()} processes (torch.distributed): rank 0 writes the run directory and runs "
            "every stage; the other ranks join its trainings (DDP)")

    current = {rundir.stage_dir(run_dir, i, s.id).name for i, s in enumerate(recipe.stages)}
    stages_root = run_dir / "stages"
    if stages_root.is_dir():
        moved = {old.name.split("-", 1)[-1]: old for old in stages_root.iterdir() if old.name not in current}
        for i, s in enumerate(recipe.stages):  # a stage inserted or removed before it: it keeps its folder's work
            new, old = rundir.stage_dir(run_dir, i, s.id), moved.pop(s.id, None)
            if old is not None and not new.exists():
                old.rename(new)
                log(f"{s.id}: moved in the recipe ({old.name} → {new.name}); its earlier work is kept")
        for old in stages_root.iterdir():  # stages no longer in the recipe
            if old.name not in current:
                shutil.rmtree(old)

    fps: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    for i, cfg in enumerate(recipe.stages):
        spec = STAGES[cfg.type]
        sdir = rundir.stage_dir(run_dir, i, cfg.id)
        inputs = cfg.inputs()
        deps = list(fps) if spec.reads_all_stages else inputs.stage_ids(fps)
        files = input_hashes(inputs, ids)
        config = cfg.model_dump(mode="json")
        fp = rundir.fingerprint(config, recipe.seed, {d: fps[d] for d in deps}, files)
        label = f"[{i + 1}/{len(recipe.stages)}] {cfg.id} ({cfg.type})"
        why = rundir.done_problem(sdir, fp) if sdir.exists() else "not started"
        if why is None:
            console.stage_skipped(cfg.id, sdir)
            record_event(run_dir, stage=cfg.id, action="skipped")
        else:
            resumed = False
            if sdir.exists() and ((sdir / "DONE").exists() or rundir.saved_fingerprint(sdir) != fp):
                log(f"{label}: {why} — running again")
                shutil.rmtree(sdir)
            elif sdir.exists():
                log(f"{label}: resuming an interrupted stage")
                resumed = True
            (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
            atomic_write_json(sdir / "config.json", {"id": cfg.id, "type": cfg.type, "config": config,
                                                     "seed": recipe.seed, "fingerprint": fp, "deps": deps,
                                                     "input_files": files})
            runtime.configure(recipe.seed, threads)
            ctx = StageContext(run_dir=run_dir, stage_dir=sdir, seed=recipe.seed, threads=threads,
                               stage_dirs=dict(dirs), allow_pickle=allow_pickle)
            console.stage_started(label, cfg.id)
            record_event(run_dir, stage=cfg.id, action="resumed" if resumed else "started")
            faults.point("stage.start")
            t0 = time.perf_counter()
            try:
                result = spec.run(cfg, ctx)
            except LlmoptError:
                if not (sdir / "checkpoints").is_dir():
                    shutil.rmtree(sdir, ignore_errors=True)  # nothing worth keeping from a stage that failed
                raise
            seconds = time.perf_counter() - t0
            atomic_write_json(sdir / "metrics.json", {**result.metrics, "stage_seconds": round(seconds, 3)})
            faults.point("stage.end")
            rundir.mark_done(sdir, seconds)
            record_event(run_dir, stage=cfg.id, action="done", seconds=round(seconds, 3))
            console.stage_done(cfg.id, seconds, result.metrics)
        fps[cfg.id] = fp
        dirs[cfg.id] = sdir
