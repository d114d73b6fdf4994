"""The answer a report opens with: which model to use, by a stated rule, read from one evaluate stage's metrics.

Rule: the recommended model is the fastest (batch-1 p50) evaluated model that
  (a) keeps at least KEEP (98%) of the reference's test accuracy, or whose paired-bootstrap
      difference from the reference is not significant (p >= ALPHA), and
  (b) passed its speed/size gate (`gate.passed`: measurably faster and smaller than its parent) and,
      where recorded, its gate against the teacher's own ONNX Runtime int8 export (`gate_vs_ort_int8`).
The reference (the teacher) needs neither and is the fallback when no model qualifies. The teacher's
int8 export is a candidate like the compressed models. A baseline is recommended instead when it is
more accurate than every model.
"""

from __future__ import annotations

from typing import Any

KEEP = 0.98
ALPHA = 0.05
ORT_INT8_SUFFIX = "-ort-int8"


def rule_text(keep: float = KEEP, alpha: float = ALPHA) -> str:
    return (f"the fastest model (batch-1 p50 latency) that keeps at least {100 * keep:g}% of the reference's test "
            f"accuracy, or whose paired-bootstrap accuracy difference from the reference is not significant "
            f"(p ≥ {alpha:g}), and that passed its speed/size gate (measurably faster and smaller than the model it "
            "was compressed from, timed in the same run, and, for ONNX Runtime models, than the teacher's own ONNX Runtime int8 "
            "export when one was evaluated). The reference is the fallback when none qualifies; a "
            "baseline is recommended when it is more accurate than every model")


def size_of(m: dict[str, Any]) -> float | None:
    """Weights on disk when known (what the gate compares), else the whole folder."""
    return m.get("weights_bytes") or m.get("size_bytes")


def accuracy_check(m: dict[str, Any], ref: dict[str, Any], keep: float = KEEP,
                   alpha: float = ALPHA) -> tuple[bool, str]:
    """(passes the accuracy budget, why) for one entry against the reference."""
    kept = m["accuracy"] / ref["accuracy"] if ref["accuracy"] else 1.0
    vs = m.get("vs_reference") or {}
    p = (vs.get("accuracy") or {}).get("p_value")
    # a bootstrap of n resamples cannot resolve p below 1/n
    shown = None if p is None else (f"p < {1 / vs['resamples']:g}" if vs.get("resamples") and p < 1 / vs["resamples"]
                                    else f"p = {p:.3f}")
    if kept >= keep:
        return True, f"keeps {100 * kept:.1f}% of the reference's accuracy"
    if p is not None and p >= alpha:
        return True, (f"keeps {100 * kept:.1f}% of the reference's accuracy, a difference that is not significant "
                      f"(paired {shown})")
    why = f"keeps {100 * kept:.1f}% of the reference's accuracy (< {100 * keep:g}%)"
    return False, why + (f", a significant drop (paired {shown})" if p is not None else "")


def gate_check(m: dict[str, Any]) -> tuple[bool, str]:
    """(passed its speed/size gates, why): the gate against its parent and, for an ONNX Runtime model, the gate
    against the teacher's own ONNX Runtime int8 export when one was evaluated."""
    gates = [g for g in (m.get("gate"), m.get("gate_vs_ort_int8")) if g]
    if not gates:
        return False, "has no speed/size gate (no evaluated parent to be timed against)"
    failed = [g for g in gates if not g.get("passed")]
    if not failed:
        return True, "passed its gate against " + " and ".join(str(g.get("parent")) for g in gates)
    return False, "; ".join(f"failed its gate against {g.get('parent')}: {g.get('flag') or g.get('verdict')}"
                            for g in failed)


def ort_int8_of(ev: dict[str, Any]) -> str | None:
    """The reference's own ONNX Runtime int8 export, when one was evaluated (`ort_int8_baseline`, an entry named
    `<ref>-ort-int8`, else the only entry whose name ends in `-ort-int8`)."""
    models, reference = ev["models"], ev["reference"]
    if ev.get("ort_int8_baseline") in models:
        return ev["ort_int8_baseline"]
    if reference + ORT_INT8_SUFFIX in models:
        return reference + ORT_INT8_SUFFIX
    found = [n for n in models if n.endswith(ORT_INT8_SUFFIX)]
    return found[0] if len(found) == 1 else None


def compare(m: dict[str, Any], other: dict[str, Any], other_name: str,
            gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """How much faster and smaller `m` is than `other`: from a recorded gate against it when there is one,
    else from the two entries' own batch-1 runs (unpaired bootstrap), else from their p50s alone."""
    if gate is None and m.get("latency_b1_runs_ms") and other.get("latency_b1_runs_ms"):
        from llmopt.compression.gate import speed_gate

        gate = speed_gate(m, other, other_name)
    out: dict[str, Any] = {"name": other_name, "verdict": None, "speedup_ci": None, "method": None}
    if gate and gate.get("latency_ratio"):
        out["speedup"] = 1 / gate["latency_ratio"]
        ci = gate.get("ratio_ci")
        out["speedup_ci"] = [1 / ci[1], 1 / ci[0]] if ci and ci[0] > 0 else None
        out["verdict"], out["method"] = gate.get("verdict"), gate.get("method")
    else:
        a, b = m.get("latency_b1_p50_ms"), other.get("latency_b1_p50_ms")
        out["speedup"] = b / a if a and b else None
    sa, sb = size_of(m), size_of(other)
    out["size_ratio"] = sb / sa if sa and sb else None
    return out


def recommend(ev: dict[str, Any], keep: float = KEEP, alpha: float = ALPHA) -> dict[str, Any]:
    """The recommended entry of an evaluate stage's metrics, why, and how it compares with the reference.

    Returns {name, kind: model|reference|baseline, reason, rule, candidates: {name: {accuracy_ok, accuracy_why,
    gate_ok, gate_why, qualifies}}, vs_reference: comparison or None, vs_ort_int8: comparison or None,
    ort_int8: name or None, baseline_note: str or None}.
    """
    models, reference = ev["models"], ev["reference"]
    ref = models[reference]
    ort = ort_int8_of(ev)
    # the teacher's int8 export is listed beside the baselines but is a deployable model: a candidate like the others
    nets = [n for n, m in models.items() if m.get("kind") == "model" or n == ort]
    cands: dict[str, dict[str, Any]] = {}
    for name in nets:
        if name == reference:
            continue
        m = models[name]
        if name == ort and not m.get("gate") and m.get("latency_b1_runs_ms") and ref.get("latency_b1_runs_ms"):
            from llmopt.compression.gate import speed_gate

            # no gate was recorded for it: against the teacher, from the two separate runs (unpaired)
            m = {**m, "gate": speed_gate(m, ref, reference)}
        a_ok, a_why = accuracy_check(m, ref, keep, alpha)
        g_ok, g_why = gate_check(m)
        if name == ort and not models[name].get("gate"):
            g_why = ("not timed against the teacher (no per-run latencies recorded)" if not m.get("gate") else
                     g_why + " (its own batch-1 runs against the teacher's, unpaired)")
        cands[name] = {"accuracy_ok": a_ok, "accuracy_why": a_why, "gate_ok": g_ok, "gate_why": g_why,
                       "qualifies": a_ok and g_ok}
    ok = [n for n, c in cands.items() if c["qualifies"]]
    best_net = max(models[n]["accuracy"] for n in nets)
    baselines = [n for n, m in models.items() if m.get("kind") == "baseline" and n not in nets]
    beating = [n for n in baselines if models[n]["accuracy"] > best_net]
    baseline_note = None
    if beating:
        name = max(beating, key=lambda n: (models[n]["accuracy"], -models[n]["latency_b1_p50_ms"]))
        kind = "baseline"
        reason = (f"the {name} baseline is more accurate than every model ({100 * models[name]['accuracy']:.1f}% "
                  f"against at most {100 * best_net:.1f}%), so no model is worth its cost on this data")
    elif ok:
        name = min(ok, key=lambda n: models[n]["latency_b1_p50_ms"])
        kind = "model"
        c = cands[name]
        others = [n for n in ok if n != name]
        reason = (f"the fastest model that {c['accuracy_why']} and {c['gate_why']}"
                  + (f"; {', '.join(others)} also qualif{'y' if len(others) > 1 else 'ies'} but "
                     f"{'are' if len(others) > 1 else 'is'} slower" if others else ""))
    else:
        name, kind = reference, "reference"
        reason = ("no other model qualifies: " + "; ".join(
            f"{n} {c['accuracy_why'] if not c['accuracy_ok'] else c['gate_why']}"
            + (f" and {c['gate_why']}" if not c["accuracy_ok"] and not c["gate_ok"] else "")
            for n, c in cands.items()) if cands else "no compressed model was evaluated")
    if kind != "baseline":
        # a baseline inside the accuracy budget is worth a mention even when a model wins on accuracy
        fine = [n for n in baselines if accuracy_check(models[n], ref, keep, alpha)[0]
                and models[n]["latency_b1_p50_ms"] < models[name]["latency_b1_p50_ms"]]
        if fine:
            b = max(fine, key=lambda n: models[n]["accuracy"])
            baseline_note = (f"the {b} baseline also stays within the accuracy budget "
                             f"({accuracy_check(models[b], ref, keep, alpha)[1]}) and is faster; consider it")
    # the trade-off a reader may still want: a faster model that passed its gates but not the accuracy budget
    faster = [n for n, c in cands.items() if c["gate_ok"] and not c["accuracy_ok"]
              and models[n]["latency_b1_p50_ms"] < models[name]["latency_b1_p50_ms"]]
    tradeoff = min(faster, key=lambda n: models[n]["latency_b1_p50_ms"]) if faster else None
    m = models[name]
    vs_ref = compare(m, ref, reference, m["gate"] if m.get("gate", {}).get("parent") == reference else None) \
        if name != reference else None
    vs_ort = None
    if ort and ort != name:
        vs_ort = compare(m, models[ort], ort, m.get("gate_vs_ort_int8"))
    elif m.get("gate_vs_ort_int8"):
        g = m["gate_vs_ort_int8"]
        ort = g.get("parent") or ort
        vs_ort = compare(m, {}, str(ort), g)
        vs_ort["size_ratio"] = vs_ort.get("size_ratio") or g.get("size_ratio")
    return {"name": name, "kind": kind, "reason": reason, "rule": rule_text(keep, alpha), "reference": reference,
            "candidates": cands, "vs_reference": vs_ref, "ort_int8": ort if vs_ort else None, "vs_ort_int8": vs_ort,
            "baseline_note": baseline_note, "tradeoff": tradeoff}


def _x(v: float) -> str:
    return f"{v:.1f}×" if v < 10 else f"{v:.0f}×"


def speed_phrase(c: dict[str, Any]) -> str:
    """'3.2× faster (95% CI 3.0–3.4×)', or what the interval allows when it is not measurably faster."""
    s, ci, v = c.get("speedup"), c.get("speedup_ci"), c.get("verdict")
    if not s:
        return "speed not measured"
    band = f" (95% CI {_x(ci[0])[:-1]}–{_x(ci[1])})" if ci else ""
    if v in (None, "faster") and s >= 1:
        return f"{_x(s)} faster{band}"
    if v in (None, "slower") and s < 1:
        return f"{_x(1 / s)} slower{band}"
    return f"not measurably faster or slower ({s:.2f}× the speed{band})"


def size_phrase(c: dict[str, Any]) -> str:
    r = c.get("size_ratio")
    if not r:
        return "size not known"
    if abs(r - 1) < 0.005:
        return "the same size"
    return f"{_x(r)} smaller" if r > 1 else f"{_x(1 / r)} larger"


def _mb(b: float | None) -> str:
    if b is None:
        return "—"
    if b < 2**20:
        return f"{b / 1024:.1f} KB" if b >= 1024 else f"{b:.0f} B"
    return f"{b / 2**20:.1f} MB"


def section(ev: dict[str, Any], doc: Any, files: dict[str, str] | None = None) -> dict[str, Any]:
    """Add the answer (heading, comparison, accuracy, files, rule, what was not chosen) to `doc`."""
    from llmopt.report.render import _ci, _ms, _p, _pct, short_path

    rec = recommend(ev)
    models, reference = ev["models"], ev["reference"]
    name, m = rec["name"], models[rec["name"]]
    title = {"model": f"The answer: use {name}", "baseline": f"The answer: use the {name} baseline",
             "reference": f"The answer: keep the teacher, {name}"}[rec["kind"]]
    doc.h(2, title)
    what = f"{name} ({m.get('runtime', m.get('kind'))})"
    if name == ort_int8_of(ev):
        what = f"{name}, the teacher itself exported to ONNX Runtime int8 ({m.get('runtime')}) and not otherwise compressed,"
    lines = []
    if rec["kind"] == "reference":
        lines.append(f"{what} is the reference every other model was tested against. Why: {rec['reason']}.")
    else:
        vs = [f"{speed_phrase(rec['vs_reference'])} and {size_phrase(rec['vs_reference'])} than the teacher, "
              f"{reference}"]
        if rec["vs_ort_int8"]:
            vs.append(f"{speed_phrase(rec['vs_ort_int8'])} and {size_phrase(rec['vs_ort_int8'])} than the "
                      f"teacher's ONNX Runtime int8 export, {rec['ort_int8']}")
        lines.append(f"{what} is " + "; and ".join(vs) + " (speed: batch-1 latency; size: weights on disk). "
                     f"Why: {rec['reason']}.")
    ref = models[reference]
    acc = f"Test accuracy (n = {ev['n']:,}): {_pct(m['accuracy'])}%{_ci(m.get('accuracy_ci'))}"
    if name == reference:
        lines.append(acc + ".")
    else:
        d = m["vs_reference"]["accuracy"]
        lines.append(
            f"{acc} against the teacher's {_pct(ref['accuracy'])}% — Δ {100 * d['diff']:+.1f} points "
            f"[95% CI {100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}], paired bootstrap "
            f"{_p(d['p_value'], m['vs_reference']['resamples'])}"
            + (f"; it keeps {100 * m['accuracy'] / ref['accuracy']:.1f}% of the teacher's accuracy."
               if m["accuracy"] < ref["accuracy"] else "."))
    path = (files or {}).get(name) or m.get("path")
    if path:
        lines.append(f"Files: {short_path(path)}")
    for line in lines:
        doc.p(line)
    roles: dict[str, list[str]] = {name: ["recommended"]}
    roles.setdefault(reference, []).append("teacher (reference)")
    ort = ort_int8_of(ev)
    if ort is not None:
        roles.setdefault(ort, []).append("teacher's ORT int8 export")
    for b, e in models.items():
        if e.get("kind") == "baseline" and b != ort:
            roles.setdefault(b, []).append("baseline")
    rows = [[n, ", ".join(r), _pct(models[n]["accuracy"]) + _ci(models[n].get("accuracy_ci")),
             _ms(models[n].get("latency_b1_p50_ms")), _mb(size_of(models[n]))] for n, r in roles.items()]
    doc.table(["model", "role", "test accuracy % [95% CI]", "batch-1 p50 ms", "size (weights)"], rows)
    if rec["baseline_note"]:
        doc.p(f"Note: {rec['baseline_note']}.")
    if rec["tradeoff"]:
        t = models[rec["tradeoff"]]
        d = t["vs_reference"]["accuracy"]
        doc.p(f"Faster, but outside the accuracy budget: {rec['tradeoff']} — {_ms(t['latency_b1_p50_ms'])} ms at batch 1 "
              f"({_x(m['latency_b1_p50_ms'] / t['latency_b1_p50_ms'])} faster than {name}), {_mb(size_of(t))}, test "
              f"accuracy {_pct(t['accuracy'])}% (Δ {100 * d['diff']:+.1f} points [95% CI {100 * d['ci'][0]:+.1f}, "
              f"{100 * d['ci'][1]:+.1f}] against the teacher). Use it only if that loss is acceptable.")
    if rec["candidates"]:
        doc.table(["model", "accuracy budget", "speed/size gate", "verdict"],
                  [[n, ("✓ " if c["accuracy_ok"] else "✗ ") + c["accuracy_why"],
                    ("✓ " if c["gate_ok"] else "✗ ") + c["gate_why"],
                    "recommended" if n == name else "not eligible" if not c["qualifies"]
                    else "qualifies, but a baseline is more accurate" if rec["kind"] == "baseline"
                    else "qualifies, slower"]
                   for n, c in rec["candidates"].items()])
    doc.p(f"Rule: {rec['rule']}.")
    return rec
