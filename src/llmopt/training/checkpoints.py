"""Trainer checkpoints: checksums recorded after each save, and the newest intact one found on resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from llmopt import console
from llmopt.fsutil import atomic_write_json
from llmopt.integrity import checksums, verify

_CKPT = re.compile(r"^checkpoint-(\d+)$")
CHECKSUMS = "llmopt-checksums.json"


def record(ckpt: Path) -> None:
    """Written after the Trainer finished the checkpoint: its presence marks the checkpoint complete."""
    atomic_write_json(ckpt / CHECKSUMS, checksums(ckpt, exclude=(CHECKSUMS,)))


def problem(ckpt: Path) -> str | None:
    """None if the checkpoint is complete and intact, else the reason it is not."""
    path = ckpt / CHECKSUMS
    if not path.is_file():
        return "incomplete (interrupted while being written)"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{path} is unreadable"
    return verify(ckpt, recorded)


def last_good_checkpoint(folder: Path, remove_bad: bool = True) -> Path | None:
    """The newest checkpoint that passes its checksums; bad newer ones are reported (and removed)."""
    if not folder.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()),
        reverse=True,
    )
    for _, p in found:
        why = problem(p)
        if why is None:
            return p
        console.note(f"checkpoint {p} is unusable: {why}; falling back to an earlier one")
        if remove_bad:
            shutil.rmtree(p, ignore_errors=True)
    return None
