"""Speed as a gate: a compressed model must be measurably faster and smaller than its parent.

"Faster" is decided on a latency ratio child/parent with a 95% bootstrap interval, never on one p50
against another (two separate measurements differ by machine noise alone: a committed run once
"passed" at 0.9995x). The ratio comes from `llmopt.eval.speed.compare_latency` — both models alive at
once, timed interleaved (ABBA) on the same batch-1 inputs — or, when a caller has only two separate
measurements, from their raw per-run latencies (unpaired bootstrap, wider interval).

Verdicts, with the margin m = MARGIN (3%):
  faster                    the interval's upper bound < 1 - m
  slower                    the interval's lower bound > 1 + m
  no measurable difference  otherwise
`passed` = faster and smaller (weights on disk).

Why a margin: the bootstrap interval covers the random noise of the runs, not the systematic error
that no resampling sees (CPU clock and cache state, allocation layout, the order effect ABBA only
mostly cancels), which is about 1–2% on a shared CPU; and a speed-up under 3% is not worth a model
that is less accurate. Real compression wins are 1.3x and more, far outside it. The margin is applied
on both sides, so two identical models read "no measurable difference" rather than "slower" by chance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARGIN = 0.03
FASTER, SLOWER, SAME, NOT_MEASURED = "faster", "slower", "no measurable difference", "not measured"


def size_of(entry: dict[str, Any]) -> float | None:
    return entry.get("weights_bytes") or entry.get("size_bytes")


def verdict(ratio_ci: list[float] | None, margin: float = MARGIN) -> str:
    """faster / slower / no measurable difference, from the interval of latency ratio child/parent."""
    if not ratio_ci:
        return NOT_MEASURED
    lo, hi = ratio_ci
    if hi < 1 - margin:
        return FASTER
    if lo > 1 + margin:
        return SLOWER
    return SAME


def speed_gate(
    child: dict[str, Any],
    parent: dict[str, Any],
    parent_name: str,
    *,
    timing: dict[str, Any] | None = None,
    margin: float = MARGIN,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The gate of `child` (a measured entry with weights_bytes/size_bytes) against `parent`.

    `timing` is `compare_latency(child=..., parent=...)`'s result. Without it the per-run batch-1
    latencies that `measure_speed` stored in both entries (`latency_b1_runs_ms`) are compared
    unpaired; with neither, speed is "not measured" and the gate fails.
    """
    from llmopt.eval.speed import bootstrap_ratio_ci

    ratio = ci = None
    method = None
    if timing is not None:
        ratio, ci, method = timing["ratio"], list(timing["ratio_ci"]), timing.get("method", "paired")
    elif child.get("latency_b1_runs_ms") and parent.get("latency_b1_runs_ms"):
        ratio, ci = bootstrap_ratio_ci(child["latency_b1_runs_ms"], parent["latency_b1_runs_ms"], paired=False,
                                       resamples=resamples, seed=seed)
        method = "unpaired"
    v = verdict(ci, margin)
    size_c, size_p = size_of(child), size_of(parent)
    faster = v == FASTER
    smaller = size_c is not None and size_p is not None and size_c < size_p
    problems = []
    if not faster:
        if ci is None:
            problems.append(f"speed vs {parent_name} not measured")
        else:
            problems.append(f"not measurably faster than {parent_name}: {v}, latency ratio {ratio:.3f} "
                            f"[95% CI {ci[0]:.3f}, {ci[1]:.3f}], needs upper bound < {1 - margin:.2f}")
    if not smaller:
        problems.append(f"not smaller than {parent_name} ({size_c} vs {size_p} bytes)")
    gate = {
        "parent": parent_name,
        "passed": faster and smaller,
        "faster": faster,
        "smaller": smaller,
        "verdict": v,
        "latency_ratio": ratio,
        "ratio_ci": ci,
        "margin": margin,
        "method": method,
        "speedup_b1": (1 / ratio) if ratio else None,
        "size_ratio": (size_p / size_c) if size_c and size_p else None,
        "flag": "; ".join(problems) or None,
    }
    if timing is not None:
        gate["timing"] = {k: timing[k] for k in ("child_p50_ms", "parent_p50_ms", "runs", "warmup", "order",
                                                 "resamples", "threads") if k in timing}
    return gate


def parent_of(ref: str, stage_dirs: dict[str, Path]) -> str | None:
    """The model a compression stage started from, as recorded in its metrics.json (`parent`)."""
    if ref not in stage_dirs:
        return None
    m = Path(stage_dirs[ref]) / "metrics.json"
    if not m.is_file():
        return None
    return json.loads(m.read_text(encoding="utf-8")).get("parent")


def gate_parents(refs: dict[str, str], stage_dirs: dict[str, Path]) -> dict[str, str]:
    """{model name: name of its nearest evaluated ancestor (via each stage's recorded `parent`)}."""
    by_ref = {ref: name for name, ref in refs.items()}
    out = {}
    for name, ref in refs.items():
        cur, seen = ref, {ref}
        while (parent := parent_of(cur, stage_dirs)) is not None and parent not in seen:
            seen.add(parent)
            if parent in by_ref:
                out[name] = by_ref[parent]
                break
            cur = parent
    return out


def annotate_gates(
    entries: dict[str, dict],
    refs: dict[str, str],
    stage_dirs: dict[str, Path],
    timings: dict[str, dict] | None = None,
    margin: float = MARGIN,
) -> None:
    """Add `gate` to every evaluated model whose ancestry (via `parent`) reaches another evaluated model.

    `timings[name]` is the paired comparison of that model with its parent; without it the gate
    falls back to the two entries' separate runs (see `speed_gate`).
    """
    for name, parent in gate_parents(refs, stage_dirs).items():
        if name in entries and parent in entries:
            entries[name]["gate"] = speed_gate(entries[name], entries[parent], parent,
                                               timing=(timings or {}).get(name), margin=margin)


def export_ort_int8_reference(src: Path, dest: Path, *, max_length: int = 128, allow_pickle: bool = False) -> Path:
    """The reference model's own ONNX Runtime dynamic-int8 export (fused), written atomically to `dest`.

    The best runtime one gets without compressing anything: a compressed ONNX Runtime model is only
    worth having if it also beats this. Dynamic int8 needs no calibration data."""
    import tempfile

    from llmopt.compression.onnx_export import export_variants
    from llmopt.errors import ModelError
    from llmopt.fsutil import atomic_replace_dir

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ort-int8-") as tmp:
        got = export_variants(src, Path(tmp), ["dynamic_int8"], max_length=max_length, allow_pickle=allow_pickle)
        if isinstance(got["dynamic_int8"], str):
            raise ModelError(f"{src}: ONNX Runtime dynamic-int8 export of the reference failed: {got['dynamic_int8']}")
        atomic_replace_dir(got["dynamic_int8"], dest)
    return dest
