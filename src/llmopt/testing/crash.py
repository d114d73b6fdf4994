"""Crash-and-resume harness: SIGKILL `llmopt run`, rerun it with --resume, and prove what was reused.

A kill comes either from a named fault point (`LLMOPT_FAULT=name:n`, see llmopt.faults) or from a timer
at a random moment. The same command then reruns with --resume. A deterministic rerun from scratch would
end with the same metrics as a resumed one, so matching metrics alone prove nothing about resuming;
each kill is judged on four things instead:

1. `files_lost_or_partial` (must be 0): right after the kill every visible file of the run directory is
   complete (parseable JSON/JSONL, loadable safetensors, finished HTML/SVG, DONE hashes matching, every
   checkpoint that carries its checksums intact); after the resume the same holds, and every file the
   uninterrupted run has (outside checkpoints/ and tensorboard/, whose names vary) exists.
2. `resumed_ok`: the resumed run ends with the quality figures of the uninterrupted one.
3. `reused_ok`, read from RUN_DIR/events.jsonl (one line per stage decision, with the pid of the process
   that made it) and the stages' metrics.json:
   - every stage that was finished at the kill (its DONE in the run directory) is `skipped` by the resume
     invocation, and no other stage is; every stage that is not skipped ends `done`;
   - the stage the kill interrupted (started by the killed process, no DONE) is `resumed` — its folder
     kept, not wiped and `started` again — and if it trains, it restarted from the newest complete
     checkpoint (a checkpoint-N folder whose llmopt-checksums.json verifies) that existed at the kill:
     `resumed_at_step` == N (so > 0) and `steps_trained_now` == global_steps - N < global_steps; with no
     complete checkpoint at the kill, `resumed_at_step` == 0.
4. `redone_s`, seconds of work done again because of the kill, per stage from events.jsonl:
   the sum over the stages the killed process had started and the resume did not skip of
   (seconds that stage ran in the killed process + seconds it ran in the resume) - (seconds it ran in
   the uninterrupted reference run). A stage the resume skipped counts 0 (all its work was reused); a
   stage the killed process never reached counts 0 (running it is not a redo). The seconds of a stage are
   the `seconds` of its `done` event, or for the interrupted stage, from its start (the mtime of the
   config.json written as it starts) to the kill. A resumed training stage thus counts the steps after its
   checkpoint that were trained twice plus loading the model and the checkpoint again, and the first stage
   the resume runs also pays for importing the libraries (torch, transformers: seconds) that in the
   uninterrupted run an earlier stage had imported. 0 is the ideal; timing noise between runs (seconds on
   a busy machine) can make it negative. `redone_by_stage` keeps the three figures per stage.
   `redone_wall_s` asks the same for whole processes: (wall time of the killed run up to the kill + wall
   time of the resume run) - wall time of the uninterrupted run; it also counts the second interpreter
   start-up and the resume's checks of finished stages.

Each result also records where the kill landed: the stage running (per the killed process's events), or
"before the first stage" / "after <stage>", and the newest complete checkpoint of that stage at the kill.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUALITY_KEYS = ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confusion_matrix", "n", "params")

# The tiny recipe of the tests and of bench/crash.py: 3 epochs x 3 steps, a checkpoint at steps 3, 6 and 9
# (save_total_limit 2 keeps the best and the last), then quantize, evaluate and report.
TINY_RECIPE = """\
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

# names vary between runs (tensorboard: host and pid; checkpoints: rotation), so they are not compared
_UNCOMPARED = ("/checkpoints/", "/tensorboard/")


@dataclass
class Reference:
    """An uninterrupted run: what every resumed run must match, and the timings `redone_s` compares with."""

    quality: dict[str, Any]
    wall_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)


@dataclass
class CrashResult:
    point: str
    killed: bool  # the process died of SIGKILL before it finished
    resumed_ok: bool = False  # the resumed run ends with the reference's quality figures
    reused_ok: bool = False  # see the module docstring, point 3
    landed: str = ""  # the stage running at the kill, or "before the first stage" / "after <stage>"
    done_at_kill: list[str] = field(default_factory=list)  # stages with a DONE right after the kill
    checkpoint_at_kill: int | None = None  # newest complete checkpoint step of the interrupted stage
    resume_actions: dict[str, str] = field(default_factory=dict)  # stage -> skipped/resumed/started
    skipped: list[str] = field(default_factory=list)
    resumed_at_step: int | None = None  # of the interrupted training stage, from its metrics.json
    steps_trained_now: int | None = None
    global_steps: int | None = None
    redone_s: float | None = None
    redone_by_stage: dict[str, list[float]] = field(default_factory=dict)  # stage -> [killed, resume, reference] s
    redone_wall_s: float | None = None
    kill_wall_s: float = 0.0
    resume_wall_s: float = 0.0
    partial: list[str] = field(default_factory=list)  # incomplete files right after the kill
    partial_after: list[str] = field(default_factory=list)  # incomplete files after the resume
    missing: list[str] = field(default_factory=list)  # files of the reference run absent after the resume
    reuse_problems: list[str] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)

    @property
    def files_lost_or_partial(self) -> int:
        return len(self.partial) + len(self.partial_after) + len(self.missing)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["files_lost_or_partial"] = self.files_lost_or_partial
        return out


@dataclass
class _Invocation:
    code: int
    pid: int
    wall_s: float
    ended_at: float  # time.time() when the process was seen to end
    stderr: str


def _env(fault: str | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMOPT_FAULT", None)
    if fault:
        env["LLMOPT_FAULT"] = fault
    return env


def _invoke(args: list[str], fault: str | None = None, kill_after: float | None = None,
            timeout: float = 900) -> _Invocation:
    """Run `llmopt` in a child process (its pid is the one events.jsonl records); SIGKILL it after `kill_after` s."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "llmopt.cli", *args], env=_env(fault),
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            code = proc.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
        wall, ended = time.perf_counter() - t0, time.time()
        err.seek(0)
        return _Invocation(code, proc.pid, wall, ended, err.read().decode("utf-8", "replace"))


def run_cli(args: list[str], fault: str | None = None, kill_after: float | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess | int:
    """Run `llmopt` in a child process; returns its CompletedProcess (or -9 if the timer killed it)."""
    cmd = [sys.executable, "-m", "llmopt.cli", *args]
    if kill_after is None:
        return subprocess.run(cmd, env=_env(fault), capture_output=True, text=True, timeout=timeout)
    return _invoke(args, fault, kill_after).code


def partial_files(run_dir: Path) -> list[str]:
    """Visible files that are incomplete; temp files (dot-named) are invisible by design."""
    from llmopt.integrity import verify
    from llmopt.training.checkpoints import CHECKSUMS, problem

    bad: list[str] = []
    for p in sorted(Path(run_dir).rglob("*")):
        rel = p.relative_to(run_dir).as_posix()
        if any(part.startswith(".") for part in p.relative_to(run_dir).parts) or not p.is_file():
            continue
        if "/checkpoints/" in rel:
            continue  # checked per checkpoint below
        why = _file_problem(p)
        if why:
            bad.append(f"{rel}: {why}")
    for done in Path(run_dir).glob("stages/*/DONE"):
        why = verify(done.parent, json.loads(done.read_text()).get("files", {}))
        if why:
            bad.append(f"{done.parent.name}: {why}")
    for ckpt in Path(run_dir).glob("stages/*/checkpoints/checkpoint-*"):
        # a checkpoint without its checksum file is unfinished and will be discarded on resume;
        # one with it must be intact
        if (ckpt / CHECKSUMS).is_file() and problem(ckpt):
            bad.append(f"{ckpt.relative_to(run_dir)}: {problem(ckpt)}")
    return bad


def _file_problem(p: Path) -> str | None:
    try:
        if p.name == "DONE" or p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            for line in p.read_text(encoding="utf-8").splitlines():
                json.loads(line)
        elif p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), "np") as f:
                for k in f.keys():
                    f.get_tensor(k)
        elif p.suffix == ".html":
            if not p.read_text(encoding="utf-8").rstrip().endswith("</html>"):
                return "HTML is cut off"
        elif p.suffix == ".svg":
            if not p.read_text(encoding="utf-8").rstrip().endswith("</svg>"):
                return "SVG is cut off"
        elif p.suffix in (".yaml", ".md") and p.stat().st_size == 0:
            return "empty"
    except Exception as e:  # any failure to read back means the file is partial
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def run_files(run_dir: Path) -> set[str]:
    """The visible files of a run directory whose names do not vary between runs."""
    out = set()
    for p in Path(run_dir).rglob("*"):
        rel = p.relative_to(run_dir).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")) \
                and not any(u in f"/{rel}" for u in _UNCOMPARED):
            out.add(rel)
    return out


def quality(run_dir: Path) -> dict[str, Any]:
    """The run's quality figures (no timings): per evaluate stage and model, plus fine-tune dev scores."""
    out: dict[str, Any] = {}
    for m in sorted(Path(run_dir).glob("stages/*/metrics.json")):
        data = json.loads(m.read_text())
        if "models" in data:
            out[m.parent.name] = {n: {k: e.get(k) for k in QUALITY_KEYS} for n, e in data["models"].items()}
        elif "dev_accuracy" in data:
            out[m.parent.name] = {k: data.get(k) for k in ("dev_accuracy", "dev_macro_f1", "global_steps", "best_metric")}
        elif "dev_perplexity" in data:  # a causal-LM fine-tune
            out[m.parent.name] = {k: data.get(k) for k in ("dev_loss", "dev_perplexity", "global_steps", "best_metric")}
    return out


def latest_run(runs_root: Path) -> Path | None:
    """The newest run directory under runs_root that `--resume` would pick (one with its recipe written)."""
    runs = sorted(p for p in Path(runs_root).glob("*/*") if (p / "recipe.resolved.yaml").is_file())
    return runs[-1] if runs else None


def events(run_dir: Path | None) -> list[dict[str, Any]]:
    """RUN_DIR/events.jsonl (a line cut by the kill would show up in partial_files, and is skipped here)."""
    path = Path(run_dir) / "events.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _stage_dirs(run_dir: Path) -> dict[str, Path]:
    """stage id -> its folder (stages/NN-id)."""
    root = Path(run_dir) / "stages"
    return {p.name.split("-", 1)[1]: p for p in sorted(root.iterdir()) if "-" in p.name} if root.is_dir() else {}


def complete_checkpoints(stage_dir: Path) -> list[int]:
    """Steps of the checkpoints in a stage folder that are complete and intact (checksums written and matching)."""
    from llmopt.training.checkpoints import problem

    folder = Path(stage_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    steps = []
    for p in folder.glob("checkpoint-*"):
        tail = p.name.rsplit("-", 1)[-1]
        if tail.isdigit() and p.is_dir() and problem(p) is None:
            steps.append(int(tail))
    return sorted(steps)


def _stage_seconds(evts: list[dict[str, Any]], pid: int | None = None) -> dict[str, float]:
    return {e["stage"]: float(e.get("seconds") or 0.0) for e in evts
            if e.get("action") == "done" and (pid is None or e.get("pid") == pid)}


def _landing(evts: list[dict[str, Any]], pid: int) -> tuple[str | None, str]:
    """(the stage the killed process was running, or None; a description of where the kill landed)."""
    mine = [e for e in evts if e.get("pid") == pid]
    if not mine:
        return None, "before the first stage"
    last = mine[-1]
    if last.get("action") in ("started", "resumed"):
        return last["stage"], last["stage"]
    return None, f"after {last['stage']}"


def crash_and_resume(recipe: Path, runs_root: Path, ref: Reference, fault: str | None = None,
                     kill_after: float | None = None, tolerance: float = 0.0) -> CrashResult:
    """Kill one run at `fault` (or after `kill_after` s), resume it, and judge it (see the module docstring)."""
    args = ["run", str(recipe), "--runs-dir", str(runs_root), "--resume"]
    first = _invoke(args, fault=fault, kill_after=kill_after)
    result = CrashResult(point=fault or f"timer:{kill_after:.1f}s", killed=first.code == -signal.SIGKILL,
                         kill_wall_s=round(first.wall_s, 3))

    # the run directory right after the kill
    kill_dir = latest_run(runs_root)
    evts = events(kill_dir)
    running, result.landed = _landing(evts, first.pid)
    dirs = _stage_dirs(kill_dir) if kill_dir else {}
    result.done_at_kill = [s for s, d in dirs.items() if (d / "DONE").is_file()]
    interrupted = running if running is not None and running not in result.done_at_kill else None
    kill_seconds = _stage_seconds(evts, first.pid)
    if interrupted is not None:
        steps = complete_checkpoints(dirs[interrupted])
        result.checkpoint_at_kill = steps[-1] if steps else None
        cfg = dirs[interrupted] / "config.json"
        kill_seconds[interrupted] = max(0.0, first.ended_at - cfg.stat().st_mtime) if cfg.is_file() else 0.0
    if kill_dir is not None:
        result.partial = partial_files(kill_dir)

    second = _invoke(args)
    result.resume_wall_s = round(second.wall_s, 3)
    run_dir = latest_run(runs_root)
    if second.code != 0 or run_dir is None or not (run_dir / "report" / "report.html").is_file():
        result.mismatch = [f"rerun failed (exit {second.code}): {second.stderr[-500:]}"]
        return result
    result.mismatch = _diff(ref.quality, quality(run_dir), tolerance)
    result.resumed_ok = not result.mismatch
    result.partial_after = partial_files(run_dir)
    if ref.files:
        result.missing = sorted(ref.files - run_files(run_dir))
    if kill_dir is not None and run_dir != kill_dir:
        result.reuse_problems.append(f"the resume ran in {run_dir.name}, not in the killed run's {kill_dir.name}")

    # what the resume invocation decided, stage by stage
    later = [e for e in events(run_dir) if e.get("pid") == second.pid]
    for e in later:
        if e.get("action") in ("skipped", "started", "resumed"):
            result.resume_actions[e["stage"]] = e["action"]
    result.skipped = [s for s, a in result.resume_actions.items() if a == "skipped"]
    resume_seconds = _stage_seconds(later)
    _judge_reuse(result, interrupted, _stage_dirs(run_dir), resume_seconds)

    if ref.stage_seconds:
        result.redone_by_stage = {s: [round(kill_seconds[s], 3), resume_seconds.get(s, 0.0), ref.stage_seconds.get(s, 0.0)]
                                  for s in kill_seconds if result.resume_actions.get(s) != "skipped"}
        result.redone_s = round(sum(k + r - u for k, r, u in result.redone_by_stage.values()), 3)
    if ref.wall_s:
        result.redone_wall_s = round(first.wall_s + second.wall_s - ref.wall_s, 3)
    return result


def _judge_reuse(result: CrashResult, interrupted: str | None, dirs: dict[str, Path],
                 resume_seconds: dict[str, float]) -> None:
    problems = result.reuse_problems
    for s in result.done_at_kill:
        if result.resume_actions.get(s) != "skipped":
            problems.append(f"{s} was finished at the kill but the resume did {result.resume_actions.get(s)!r}")
    for s, action in result.resume_actions.items():
        if action == "skipped" and s not in result.done_at_kill:
            problems.append(f"{s} was skipped though it was not finished at the kill")
        if action != "skipped" and s not in resume_seconds:
            problems.append(f"{s} was {action} by the resume but never done")
    if interrupted is not None:
        action = result.resume_actions.get(interrupted)
        if action != "resumed":
            problems.append(f"{interrupted} was interrupted by the kill but the resume did {action!r}, not 'resumed'")
        metrics_path = dirs.get(interrupted, Path("/nonexistent")) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        if "resumed_at_step" in metrics:  # a training stage
            result.resumed_at_step = metrics["resumed_at_step"]
            result.steps_trained_now = metrics.get("steps_trained_now")
            result.global_steps = metrics.get("global_steps")
            want = result.checkpoint_at_kill or 0
            if result.resumed_at_step != want:
                problems.append(f"{interrupted} resumed at step {result.resumed_at_step}, but the newest complete "
                                f"checkpoint at the kill was {'step ' + str(want) if want else 'none'}")
            now, total = result.steps_trained_now, result.global_steps
            if want and not (isinstance(now, int) and isinstance(total, int) and 0 <= now < total
                             and now == total - result.resumed_at_step):
                problems.append(f"{interrupted} trained {result.steps_trained_now} steps now of "
                                f"{result.global_steps} after resuming at {result.resumed_at_step}")
    result.reused_ok = result.killed and not problems


def _diff(a: Any, b: Any, tol: float, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), tol, f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, tol, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return [] if abs(a - b) <= tol else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def reference_run(recipe: Path, runs_root: Path) -> Reference:
    """One uninterrupted run: its quality figures, files, and wall and per-stage times."""
    inv = _invoke(["run", str(recipe), "--runs-dir", str(runs_root)])
    if inv.code != 0:
        raise RuntimeError(f"reference run failed: {inv.stderr[-2000:]}")
    run_dir = latest_run(runs_root)
    return Reference(quality=quality(run_dir), wall_s=inv.wall_s, stage_seconds=_stage_seconds(events(run_dir)),
                     files=run_files(run_dir))


def write_tiny_recipe(folder: Path, model: Path, rows: list[dict] | None = None) -> Path:
    """TINY_RECIPE on 60 balanced labelled sentences written next to it; returns the recipe's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if rows is None:
        words = ["good", "great", "fine", "nice", "bad", "awful", "poor", "dull"]
        rows = [{"text": f"a {words[(i * 3) % 4 + (0 if i % 2 == 0 else 4)]} film number {i}",
                 "label": "positive" if i % 2 == 0 else "negative"} for i in range(60)]
    data = folder / "crash.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = folder / "crash.yaml"
    recipe.write_text(TINY_RECIPE.format(data=data, model=model), encoding="utf-8")
    return recipe


def summarize(results: list[CrashResult]) -> dict[str, Any]:
    """The figures bench/crash.py reports for a kill matrix."""
    killed = [r for r in results if r.killed]
    redone = [r.redone_s for r in killed if r.redone_s is not None]
    return {
        "kills": len(killed),
        "tried": len(results),
        "resumed_ok": sum(r.resumed_ok for r in killed),
        "reused_ok": sum(r.reused_ok for r in killed),
        "files_lost_or_partial": sum(r.files_lost_or_partial for r in results),
        "redone_s": redone,
        "redone_s_median": round(statistics.median(redone), 3) if redone else None,
        "redone_s_max": round(max(redone), 3) if redone else None,
    }
