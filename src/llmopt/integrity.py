"""Sizes and sha256 of written files, recorded at write time and checked before reuse."""

from __future__ import annotations

from pathlib import Path

from llmopt.fsutil import sha256_file


def checksums(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, int | str]]:
    """{relative path: {bytes, sha256}} for every regular file under `folder`."""
    folder = Path(folder)
    out: dict[str, dict[str, int | str]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in exclude and not p.name.startswith("."):
            out[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def verify(folder: Path, recorded: dict[str, dict[str, int | str]]) -> str | None:
    """None when every recorded file is present with its size and hash; else what is wrong."""
    folder = Path(folder)
    for rel, want in recorded.items():
        p = folder / rel
        if not p.is_file():
            return f"{p} is missing"
        size = p.stat().st_size
        if size != want["bytes"]:
            return f"{p} is {size} bytes, {want['bytes']} were written (truncated or altered)"
        if sha256_file(p) != want["sha256"]:
            return f"{p} has a different sha256 than when it was written (corrupted)"
    return None
