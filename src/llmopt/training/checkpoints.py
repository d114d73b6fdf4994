"""Find the newest complete Trainer checkpoint to resume from."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(ckpt: Path) -> bool:
    """Trainer writes trainer_state.json last, so a parseable one marks a finished checkpoint."""
    state = ckpt / "trainer_state.json"
    if not state.is_file() or not any(ckpt.glob("*.safetensors")):
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def last_complete_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()),
        reverse=True,
    )
    for _, p in found:
        if is_complete(p):
            return p
    return None
