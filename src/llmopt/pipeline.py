"""Run a recipe: create or resume a run directory, run each stage unless already done."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from llmopt import faults, rundir
from llmopt.errors import LlmoptError, RunDirError
from llmopt.fsutil import atomic_write_json, read_json, remove_stale_temps
from llmopt.recipe import Recipe, load_recipe
from llmopt.stages import STAGES
from llmopt.stages.base import StageContext


def log(msg: str) -> None:
    print(f"[llmopt] {msg}", file=sys.stderr, flush=True)


def run_recipe(
    recipe_path: Path,
    overrides: list[str] | None = None,
    runs_root: Path = Path("runs"),
    resume: str | None = None,
    argv: list[str] | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Run every stage of the recipe; return the run directory."""
    recipe = load_recipe(recipe_path, overrides)
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
    try:
        with rundir.RunLock(run_dir):
            execute(recipe, Path(recipe_path).read_text(encoding="utf-8"), run_dir, argv or [], allow_pickle)
    except LlmoptError:
        # a user error: leave no half-made run behind (a run with finished stages stays resumable)
        if created and not any((run_dir / "stages").glob("*/DONE")):
            shutil.rmtree(run_dir, ignore_errors=True)
            _remove_if_empty(run_dir.parent)
        raise
    return run_dir


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def execute(recipe: Recipe, recipe_text: str, run_dir: Path, argv: list[str], allow_pickle: bool = False) -> None:
    from llmopt import runtime

    runtime.offline_env()
    for p in remove_stale_temps(run_dir):
        log(f"removed a temp file left by an interrupted run: {p.relative_to(run_dir)}")
    threads = recipe.threads or runtime.default_threads()
    rundir.write_recipe_files(run_dir, recipe_text, recipe.resolved_yaml())
    data_files = [p for s in recipe.stages if hasattr(s, "input_files") for p in s.input_files()]
    rundir.write_manifest(run_dir, recipe.seed, data_files, argv)
    log(f"run directory: {run_dir}")

    current = {rundir.stage_dir(run_dir, i, s.id).name for i, s in enumerate(recipe.stages)}
    stages_root = run_dir / "stages"
    if stages_root.is_dir():
        for old in stages_root.iterdir():  # stages no longer in the recipe, or moved
            if old.name not in current:
                shutil.rmtree(old)

    fps: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    types: dict[str, str] = {}
    for i, cfg in enumerate(recipe.stages):
        spec = STAGES[cfg.type]
        sdir = rundir.stage_dir(run_dir, i, cfg.id)
        deps = list(fps) if spec.reads_all_stages else [r for r in cfg.refs() + cfg.model_refs() if r in fps]
        config = cfg.model_dump(mode="json")
        fp = rundir.fingerprint(config, recipe.seed, {d: fps[d] for d in deps})
        label = f"[{i + 1}/{len(recipe.stages)}] {cfg.id} ({cfg.type})"
        why = rundir.done_problem(sdir, fp) if sdir.exists() else "not started"
        if why is None:
            log(f"{label}: done earlier, config unchanged — skipped")
        else:
            if sdir.exists() and ((sdir / "DONE").exists() or rundir.saved_fingerprint(sdir) != fp):
                log(f"{label}: {why} — running again")
                shutil.rmtree(sdir)
            elif sdir.exists():
                log(f"{label}: resuming an interrupted stage")
            (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
            atomic_write_json(sdir / "config.json", {"id": cfg.id, "type": cfg.type, "config": config,
                                                     "seed": recipe.seed, "fingerprint": fp, "deps": deps})
            runtime.configure(recipe.seed, threads)
            ctx = StageContext(run_dir=run_dir, stage_dir=sdir, seed=recipe.seed, threads=threads,
                               stage_dirs=dict(dirs), stage_types=dict(types), allow_pickle=allow_pickle)
            log(f"{label}: running")
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
            log(f"{label}: done in {seconds:.1f}s")
        fps[cfg.id] = fp
        dirs[cfg.id] = sdir
        types[cfg.id] = cfg.type


def stage_metrics(run_dir: Path) -> list[tuple[str, str, dict]]:
    """(id, type, metrics) of every finished stage in the run directory, in order."""
    out = []
    root = Path(run_dir) / "stages"
    if not root.is_dir():
        raise RunDirError(f"{run_dir}: no stages/ folder; is this a run directory?")
    for sdir in sorted(root.iterdir()):
        if (sdir / "DONE").is_file() and (sdir / "metrics.json").is_file():
            conf = read_json(sdir / "config.json")
            out.append((conf["id"], conf["type"], read_json(sdir / "metrics.json")))
    return out
