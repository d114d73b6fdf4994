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


def choose(cands: dict[str, dict], min_acc: float, objective: str) -> tuple[str | None, str]:
    """The fastest (or smallest) gated candidate within tolerance; else the most accurate gated one; else any."""
    key = "latency_b1_p50_ms" if objective == "latency" else "size_bytes"
    gated = {n: c for n, c in cands.items() if c["gate"]["passed"]}
    within = {n: c for n, c in gated.items() if c["accuracy"] >= min_acc}
    if within:
        return min(within, key=lambda n: (within[n][key], -within[n]["accuracy"])), "within tolerance"
    pool = gated or cands
    if not pool:
        return None, "no candidate finished"
    best = max(pool, key=lambda n: pool[n]["accuracy"])
    why = "no candidate within tolerance: kept the closest (most accurate)"
    return best, why + ("" if gated else "; none passed the speed/size gate either")


def summary(c: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "accuracy_ci", "macro_f1", "latency_b1_p50_ms", "latency_b1_p95_ms", "throughput_b32",
            "size_bytes", "params", "gate", "within_tolerance", "seconds")
    return {k: c.get(k) for k in keep}
