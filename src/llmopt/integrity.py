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


_HASHES: dict[tuple[str, int, int], str] = {}


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents): what an input's fingerprint holds.

    Cached per (path, size, mtime) within the process, so checking a large model folder twice costs nothing."""
    import hashlib

    path = Path(path)
    if path.is_file():
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _HASHES:
            _HASHES[key] = sha256_file(path)
        return _HASHES[key]
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + content_hash(p).encode() + b"\0")
    return h.hexdigest()
