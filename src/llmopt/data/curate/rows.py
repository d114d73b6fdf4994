"""Streaming JSONL reading with row ids and checks, and a streaming atomic writer."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmopt.errors import DataError


def iter_rows(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    """(row id, row) for each non-blank line; a row without an `id` gets '<split>-<n>' (n counts rows from 0)."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = parse_row(line, path, lineno)
            yield row_id(row, split, n), row
            n += 1


def parse_row(line: str, path: Any, lineno: int) -> dict:
    """One JSONL line as a row with a string 'text' and a 'label', or a DataError naming file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}). Rerun the data stage or fix that line.") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "label" not in row:
        raise DataError(f"{path}:{lineno}: a row needs a string 'text' and a 'label' "
                        f"(got keys {sorted(row) if isinstance(row, dict) else type(row).__name__}). "
                        "Check the data stage's text_column/label_column.")
    return row


def row_id(row: dict, split: str, n: int) -> str:
    """The row's own id, else '<split>-<n>' (n counts the split's rows from 0)."""
    return str(row["id"]) if row.get("id") is not None else f"{split}-{n}"


class AtomicLines:
    """Write JSON lines to a temp file beside `path`; it replaces `path` only when the block ends without error."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = 0

    def __enter__(self) -> "AtomicLines":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.f = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def write(self, obj: Any) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.count += 1

    def write_raw(self, line: str) -> None:
        self.f.write(line)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
        finally:
            self.f.close()
        if exc_type is not None:
            Path(self.tmp).unlink(missing_ok=True)
            return
        os.replace(self.tmp, self.path)
