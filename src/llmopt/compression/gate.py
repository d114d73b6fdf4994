"""Speed as a gate: a compressed model must be faster and smaller than its parent, both timed in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def size_of(entry: dict[str, Any]) -> float | None:
    return entry.get("weights_bytes") or entry.get("size_bytes")


def speed_gate(child: dict[str, Any], parent: dict[str, Any], parent_name: str) -> dict[str, Any]:
    """Compare batch-1 p50 latency and weight bytes; `passed` only when both are strictly lower."""
    lat_c, lat_p = child["latency_b1_p50_ms"], parent["latency_b1_p50_ms"]
    size_c, size_p = size_of(child), size_of(parent)
    faster = lat_c < lat_p
    smaller = size_c is not None and size_p is not None and size_c < size_p
    problems = ([] if faster else [f"not faster than {parent_name} ({lat_c:.2f} vs {lat_p:.2f} ms b1 p50)"]) + (
        [] if smaller else [f"not smaller than {parent_name} ({size_c} vs {size_p} bytes)"])
    return {
        "parent": parent_name,
        "passed": faster and smaller,
        "faster": faster,
        "smaller": smaller,
        "speedup_b1": lat_p / lat_c if lat_c else None,
        "size_ratio": (size_p / size_c) if size_c and size_p else None,
        "flag": "; ".join(problems) or None,
    }


def parent_of(ref: str, stage_dirs: dict[str, Path]) -> str | None:
    """The model a compression stage started from, as recorded in its metrics.json (`parent`)."""
    if ref not in stage_dirs:
        return None
    m = Path(stage_dirs[ref]) / "metrics.json"
    if not m.is_file():
        return None
    return json.loads(m.read_text(encoding="utf-8")).get("parent")


def annotate_gates(entries: dict[str, dict], refs: dict[str, str], stage_dirs: dict[str, Path]) -> None:
    """Add `gate` to every evaluated model whose ancestry (via `parent`) reaches another evaluated model."""
    by_ref = {ref: name for name, ref in refs.items()}
    for name, ref in refs.items():
        cur, seen = ref, {ref}
        while (parent := parent_of(cur, stage_dirs)) is not None and parent not in seen:
            seen.add(parent)
            if parent in by_ref and by_ref[parent] in entries:
                entries[name]["gate"] = speed_gate(entries[name], entries[by_ref[parent]], by_ref[parent])
                break
            cur = parent
