"""Crash-and-resume harness: SIGKILL `llmopt run` at a point, rerun it, check nothing was lost.

A kill comes either from a named fault point (`LLMOPT_FAULT=name:n`, see llmopt.faults) or from a
timer at a random moment. After each kill the run directory is scanned: every visible file must be
complete (parseable JSON/JSONL, loadable safetensors, finished HTML/SVG, DONE hashes matching).
The same command then reruns with --resume and must finish with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUALITY_KEYS = ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "confusion_matrix", "n", "params")


@dataclass
class CrashResult:
    point: str
    killed: bool
    resumed_ok: bool
    partial: list[str] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.partial)


def run_cli(args: list[str], fault: str | None = None, kill_after: float | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess | int:
    """Run `llmopt` in a child process; returns its CompletedProcess (or -9 if the timer killed it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMOPT_FAULT", None)
    if fault:
        env["LLMOPT_FAULT"] = fault
    cmd = [sys.executable, "-m", "llmopt.cli", *args]
    if kill_after is None:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return -signal.SIGKILL


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


def quality(run_dir: Path) -> dict[str, Any]:
    """The run's quality figures (no timings): per evaluate stage and model, plus fine-tune dev scores."""
    out: dict[str, Any] = {}
    for m in sorted(Path(run_dir).glob("stages/*/metrics.json")):
        data = json.loads(m.read_text())
        if "models" in data:
            out[m.parent.name] = {n: {k: e.get(k) for k in QUALITY_KEYS} for n, e in data["models"].items()}
        elif "dev_accuracy" in data:
            out[m.parent.name] = {k: data.get(k) for k in ("dev_accuracy", "dev_macro_f1", "global_steps", "best_metric")}
    return out


def latest_run(runs_root: Path) -> Path | None:
    runs = sorted(p for p in Path(runs_root).glob("*/*") if p.is_dir())
    return runs[-1] if runs else None


def crash_and_resume(recipe: Path, runs_root: Path, reference: dict[str, Any], fault: str | None = None,
                     kill_after: float | None = None, tolerance: float = 0.0) -> CrashResult:
    """Kill one run at `fault` (or after `kill_after` s), resume it, compare with `reference`."""
    args = ["run", str(recipe), "--runs-dir", str(runs_root), "--resume"]
    first = run_cli(args, fault=fault, kill_after=kill_after)
    code = first if isinstance(first, int) else first.returncode
    point = fault or f"timer:{kill_after:.1f}s"
    result = CrashResult(point=point, killed=code == -signal.SIGKILL, resumed_ok=False)
    run_dir = latest_run(runs_root)
    if run_dir is not None:
        result.partial = partial_files(run_dir)
    second = run_cli(args)
    assert not isinstance(second, int)
    run_dir = latest_run(runs_root)
    if second.returncode == 0 and run_dir is not None and (run_dir / "report" / "report.html").is_file():
        got = quality(run_dir)
        result.mismatch = _diff(reference, got, tolerance)
        result.resumed_ok = not result.mismatch
        result.partial += partial_files(run_dir)
    else:
        result.mismatch = [f"rerun failed (exit {second.returncode}): {second.stderr[-500:]}"]
    return result


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


def timed_reference(recipe: Path, runs_root: Path) -> tuple[dict[str, Any], float]:
    """One uninterrupted run: its quality figures and wall time (to pick random kill moments)."""
    t0 = time.perf_counter()
    out = run_cli(["run", str(recipe), "--runs-dir", str(runs_root)])
    assert not isinstance(out, int)
    if out.returncode != 0:
        raise RuntimeError(f"reference run failed: {out.stderr[-2000:]}")
    return quality(latest_run(runs_root)), time.perf_counter() - t0
