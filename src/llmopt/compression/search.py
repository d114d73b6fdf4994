"""Accuracy-budget search helpers: candidate grid, Pareto frontier, the within-tolerance choice."""

from __future__ import annotations

import itertools
from typing import Any


FAMILIES = ("transformer", "bilstm", "cnn")
CANDIDATE_KEYS = ("family", "layers", "hidden", "ffn_keep", "attention_loss", "hidden_loss", "embed_dim", "vocab_trim",
                  "scheme")
TEXTNET_DEFAULT_HIDDEN = 128


def candidate_grid(layers: list[int], ffn_keep: list[float], vocab_trim: list[bool], schemes: list[str], *,
                   family: list[str] = ("transformer",), hidden: list[int | None] = (None,),
                   embed_dim: list[int] = (128,), attention_loss: list[float] = (0.0,),
                   hidden_loss: list[float] = (0.0,)) -> list[dict]:
    """Every combination that means something for each family, cheapest structures first within a family.

    transformer: depth (evenly spaced teacher layers) × width (`hidden`; None = the teacher's, narrower = cut from
    the teacher) × FFN share kept × layer-wise loss weights. bilstm: LSTM layers × units (`hidden`) × embedding
    width. cnn: feature maps (`hidden`) × embedding width (`layers` does not apply). All: vocabulary trim × scheme."""
    grid: list[dict] = []
    for fam in dict.fromkeys(family):
        if fam == "transformer":
            for k, h, f, att, hid, v, s in itertools.product(
                    sorted(set(layers)), sorted(set(hidden), key=lambda x: x or 1 << 30), sorted(set(ffn_keep)),
                    sorted(set(attention_loss)), sorted(set(hidden_loss)), vocab_trim, schemes):
                c = {"family": fam, "layers": k, "ffn_keep": f, "vocab_trim": v, "scheme": s}
                if h is not None:
                    c["hidden"] = h
                if att:
                    c["attention_loss"] = att
                if hid:
                    c["hidden_loss"] = hid
                grid.append(c)
        else:
            units = sorted({h or TEXTNET_DEFAULT_HIDDEN for h in hidden})
            depths = sorted(set(layers)) if fam == "bilstm" else [1]
            for k, h, e, v, s in itertools.product(depths, units, sorted(set(embed_dim)), vocab_trim, schemes):
                grid.append({"family": fam, "layers": k, "hidden": h, "embed_dim": e, "vocab_trim": v, "scheme": s})
    return grid


def structure_name(c: dict) -> str:
    """The trained model's name (several schemes share it). Transformer names without the new options are the
    names earlier versions gave, so a resumed search keeps its finished candidates."""
    fam = c.get("family", "transformer")
    trim = "-trim" if c["vocab_trim"] else ""
    if fam == "bilstm":
        return f"bilstm-L{c['layers']}-h{c['hidden']}-e{c['embed_dim']}{trim}"
    if fam == "cnn":
        return f"cnn-h{c['hidden']}-e{c['embed_dim']}{trim}"
    return (f"L{c['layers']}" + (f"-h{c['hidden']}" if c.get("hidden") else "")
            + f"-ffn{int(round(100 * c['ffn_keep']))}"
            + (f"-att{c['attention_loss']:g}" if c.get("attention_loss") else "")
            + (f"-hid{c['hidden_loss']:g}" if c.get("hidden_loss") else "") + trim)


def describe(c: dict) -> str:
    """A candidate's student in words, for the report's table."""
    fam = c.get("family") or "transformer"
    if fam == "bilstm":
        return f"BiLSTM, {c['layers']} layer{'s' * (c['layers'] > 1)}, {c['hidden']} units, embeddings {c['embed_dim']}"
    if fam == "cnn":
        return f"CNN, {c['hidden']} maps per kernel, embeddings {c['embed_dim']}"
    loss = [f"attention KL {c['attention_loss']:g}" if c.get("attention_loss") else "",
            f"hidden MSE {c['hidden_loss']:g}" if c.get("hidden_loss") else ""]
    return (f"{c['layers']} teacher layers" + (f", width {c['hidden']}" if c.get("hidden") else "")
            + (f", FFN {c['ffn_keep']:.0%}" if c.get("ffn_keep") is not None else "")
            + "".join(f", {x}" for x in loss if x))


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
