"""Accuracy-budget search helpers: candidate grid, Pareto frontier, the within-tolerance choice."""

from __future__ import annotations

import itertools
from typing import Any


def candidate_grid(layers: list[int], ffn_keep: list[float], vocab_trim: list[bool], schemes: list[str]) -> list[dict]:
    """Every combination, cheapest structures first (fewest layers, narrowest FFN)."""
    grid = [{"layers": k, "ffn_keep": f, "vocab_trim": v, "scheme": s}
            for k, f, v, s in itertools.product(sorted(set(layers)), sorted(set(ffn_keep)), vocab_trim, schemes)]
    return grid


def structure_name(c: dict) -> str:
    return f"L{c['layers']}-ffn{int(round(100 * c['ffn_keep']))}" + ("-trim" if c["vocab_trim"] else "")


def candidate_name(c: dict) -> str:
    return f"{structure_name(c)}-{c['scheme']}"


def threshold(teacher_acc: float, max_drop: float, mode: str) -> float:
    """Least dev accuracy within tolerance: relative (teacher × (1 - drop)) or absolute (teacher - drop)."""
    return teacher_acc * (1 - max_drop) if mode == "relative" else teacher_acc - max_drop


def pareto(cands: dict[str, dict]) -> list[str]:
    """Names not dominated on (higher accuracy, lower b1 latency, smaller size)."""
    def dominates(a: dict, b: dict) -> bool:
        ge = a["accuracy"] >= b["accuracy"] and a["latency_b1_p50_ms"] <= b["latency_b1_p50_ms"] and a["size_bytes"] <= b["size_bytes"]
        gt = a["accuracy"] > b["accuracy"] or a["latency_b1_p50_ms"] < b["latency_b1_p50_ms"] or a["size_bytes"] < b["size_bytes"]
        return ge and gt

    return sorted(n for n, c in cands.items() if not any(dominates(o, c) for m, o in cands.items() if m != n))


def _speed_key(c: dict) -> float:
    """Paired latency ratio to the teacher when measured (each candidate timed beside the teacher),
    else the candidate's own p50."""
    r = (c.get("gate") or {}).get("latency_ratio")
    return r if r is not None else c["latency_b1_p50_ms"]


def choose(cands: dict[str, dict], min_acc: float, objective: str) -> tuple[str | None, str]:
    """The fastest (or smallest) candidate that passed the speed/size gate and is within tolerance.

    A candidate that failed the gate is never chosen. When none passed: (None, why). When some passed
    but none is within tolerance: the most accurate of those that passed, and the reason says so.
    """
    if not cands:
        return None, "no candidate finished"
    gated = {n: c for n, c in cands.items() if c["gate"]["passed"]}
    if not gated:
        flags = [f"{n}: {c['gate'].get('flag') or c['gate'].get('verdict', 'failed')}" for n, c in sorted(cands.items())]
        more = f"; and {len(flags) - 3} more" if len(flags) > 3 else ""
        return None, (f"none of the {len(cands)} candidates passed the speed/size gate (measurably faster and "
                      f"smaller than the teacher), so none is kept — " + "; ".join(flags[:3]) + more)
    within = {n: c for n, c in gated.items() if c["accuracy"] >= min_acc}
    if within:
        def key(n: str) -> tuple:
            return (_speed_key(within[n]) if objective == "latency" else within[n]["size_bytes"], -within[n]["accuracy"])
        return min(within, key=key), "within tolerance"
    best = max(gated, key=lambda n: gated[n]["accuracy"])
    return best, ("no candidate that passed the speed/size gate is within tolerance: kept the closest "
                  "(most accurate) of those that passed")


def summary(c: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "accuracy_ci", "macro_f1", "latency_b1_p50_ms", "latency_b1_p95_ms", "throughput_b32",
            "size_bytes", "params", "gate", "within_tolerance", "seconds")
    return {k: c.get(k) for k in keep}
