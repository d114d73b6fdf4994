"""The answer a report opens with, on hand-made evaluate metrics whose outcome can be checked by hand."""

from __future__ import annotations

from llmopt.report.answer import accuracy_check, recommend, section
from llmopt.report.render import Doc


def entry(acc: float, p50: float, size: int, kind: str = "model", gate: dict | None = None, p: float | None = None,
          runtime: str | None = None, **extra) -> dict:
    """One evaluate entry; `p` is the paired p-value against the reference (None for the reference itself)."""
    e = {"kind": kind, "runtime": runtime or ("pytorch-eager-fp32" if kind == "model" else "python"), "n": 1000, "accuracy": acc, "accuracy_ci": [acc - 0.02, acc + 0.02],
         "macro_f1": acc, "macro_f1_ci": [acc - 0.02, acc + 0.02], "latency_b1_p50_ms": p50,
         "latency_b1_p95_ms": 1.2 * p50, "throughput_b32": 1000 / p50, "params": size // 4, "size_bytes": size,
         "weights_bytes": size if kind == "model" else None, **extra}
    if gate is not None:
        e["gate"] = gate
    if p is not None:
        e["vs_reference"] = {"resamples": 1000, "accuracy": {"diff": acc - 0.80, "ci": [acc - 0.82, acc - 0.78],
                                                              "p_value": p}}
    return e


def gate(parent: str, passed: bool = True, ratio: float = 0.5) -> dict:
    return {"parent": parent, "passed": passed, "faster": passed, "smaller": True,
            "verdict": "faster" if passed else "no measurable difference", "latency_ratio": ratio,
            "ratio_ci": [ratio * 0.95, ratio * 1.05], "margin": 0.03, "speedup_b1": 1 / ratio, "size_ratio": 2.0,
            "flag": None if passed else f"not measurably faster than {parent}"}


def metrics(models: dict, reference: str = "teacher", **extra) -> dict:
    return {"split": "test", "n": 1000, "labels": ["neg", "pos"], "reference": reference, "threads": 2,
            "timing": "batch 1", "models": models, **extra}


def test_fastest_qualifying_model_is_recommended():
    ev = metrics({
        "majority": entry(0.50, 0.001, 35, kind="baseline", p=0.001),
        "tfidf": entry(0.70, 0.5, 10_000, kind="baseline", p=0.001),
        "teacher": entry(0.80, 10.0, 80_000_000, path="/runs/x/stages/01-teacher/artifacts/model"),
        "student": entry(0.795, 4.0, 40_000_000, gate=gate("teacher", ratio=0.4), p=0.4, path="/runs/student"),
        # faster still, but loses 5 points (93.75% kept) and the drop is significant: not eligible
        "tiny": entry(0.75, 1.0, 10_000_000, gate=gate("student"), p=0.001),
        "quant": entry(0.790, 2.0, 10_000_000, gate=gate("student"), p=0.2, path="/runs/quant"),
    })
    rec = recommend(ev)
    assert rec["name"] == "quant" and rec["kind"] == "model"
    assert rec["candidates"]["tiny"]["accuracy_ok"] is False and rec["candidates"]["student"]["qualifies"]
    # no gate against the teacher recorded and no per-run latencies: from the p50s, 10 / 2 and 80 MB / 10 MB
    assert rec["vs_reference"]["speedup"] == 5.0 and rec["vs_reference"]["size_ratio"] == 8.0
    assert rec["vs_ort_int8"] is None
    assert rec["tradeoff"] == "tiny"  # faster and gated, but outside the accuracy budget: named as the trade-off
    doc = Doc()
    section(ev, doc)
    assert "Faster, but outside the accuracy budget: tiny — 1.00 ms at batch 1 (2.0× faster than quant)" in doc.markdown()


def test_gate_against_teacher_gives_the_interval():
    ev = metrics({"teacher": entry(0.80, 10.0, 80_000_000),
                  "student": entry(0.80, 4.0, 40_000_000, gate=gate("teacher", ratio=0.4), p=1.0)})
    vs = recommend(ev)["vs_reference"]
    assert abs(vs["speedup"] - 2.5) < 1e-9 and vs["verdict"] == "faster"
    assert abs(vs["speedup_ci"][0] - 1 / 0.42) < 1e-9 and abs(vs["speedup_ci"][1] - 1 / 0.38) < 1e-9


def test_accuracy_budget_rule():
    ref = entry(0.80, 10.0, 1000)
    assert accuracy_check(entry(0.785, 1, 1, p=0.01), ref)[0]  # 98.1% kept: inside the budget even if significant
    assert not accuracy_check(entry(0.78, 1, 1, p=0.01), ref)[0]  # 97.5% kept, significant drop
    ok, why = accuracy_check(entry(0.70, 1, 1, p=0.2), ref)  # 87.5% kept, but not significant (a small test set)
    assert ok and "not significant" in why


def test_baseline_that_beats_every_model_is_recommended():
    ev = metrics({
        "majority": entry(0.50, 0.001, 35, kind="baseline", p=0.001),
        "tfidf": entry(0.85, 0.5, 10_000, kind="baseline", p=0.01),
        "teacher": entry(0.80, 10.0, 80_000_000),
        "quant": entry(0.80, 2.0, 10_000_000, gate=gate("teacher"), p=1.0),
    })
    rec = recommend(ev)
    assert (rec["name"], rec["kind"]) == ("tfidf", "baseline")
    assert "more accurate than every model" in rec["reason"]
    doc = Doc()
    section(ev, doc, files={"tfidf": "/runs/x/stages/02-evaluate/artifacts/baselines/tfidf.json"})
    md = doc.markdown()
    assert md.startswith("## The answer: use the tfidf baseline")
    assert "20× faster" in md and "baselines/tfidf.json" in md
    assert "qualifies, but a baseline is more accurate" in md


def test_nothing_passes_the_gate_recommends_the_teacher_and_says_why():
    ev = metrics({
        "tfidf": entry(0.70, 0.5, 10_000, kind="baseline", p=0.001),
        "teacher": entry(0.80, 10.0, 80_000_000, path="/runs/x/teacher"),
        "student": entry(0.80, 9.8, 40_000_000, gate=gate("teacher", passed=False, ratio=0.98), p=1.0),
    })
    rec = recommend(ev)
    assert (rec["name"], rec["kind"]) == ("teacher", "reference")
    assert "student failed its gate against teacher" in rec["reason"]
    doc = Doc()
    section(ev, doc)
    md = doc.markdown()
    assert md.startswith("## The answer: keep the teacher, teacher")
    assert "not measurably faster than teacher" in md and "Files: /runs/x/teacher" in md


def test_teacher_int8_export_is_compared_and_is_a_candidate():
    ort = entry(0.80, 3.0, 20_000_000, kind="baseline", p=1.0, runtime="onnxruntime-dynamic_int8")
    quant = entry(0.795, 2.0, 10_000_000, gate=gate("student"), p=0.5, runtime="onnxruntime-dynamic_int8",
                  gate_vs_ort_int8=gate("teacher-ort-int8", ratio=0.4) | {"size_ratio": 2.0})
    ev = metrics({"tfidf": entry(0.70, 0.5, 10_000, kind="baseline", p=0.001),
                  "teacher": entry(0.80, 10.0, 80_000_000), "teacher-ort-int8": ort,
                  "student": entry(0.80, 4.0, 40_000_000, gate=gate("teacher", ratio=0.4), p=1.0), "quant": quant},
                 ort_int8_baseline="teacher-ort-int8")
    rec = recommend(ev)
    assert rec["name"] == "quant" and rec["ort_int8"] == "teacher-ort-int8"
    assert abs(rec["vs_ort_int8"]["speedup"] - 2.5) < 1e-9 and rec["vs_ort_int8"]["size_ratio"] == 2.0
    assert rec["vs_ort_int8"]["verdict"] == "faster"  # from the recorded (paired) gate, not the p50s (1.5×)
    doc = Doc()
    section(ev, doc)
    assert "than the teacher's ONNX Runtime int8 export, teacher-ort-int8" in doc.markdown()

    # the same compressed model, not faster than the teacher's int8 export, is not eligible; the export has no
    # gate of its own and is timed against the teacher from the two entries' per-run latencies when they exist
    quant["gate_vs_ort_int8"] = gate("teacher-ort-int8", passed=False, ratio=0.99)
    rec = recommend(ev)
    assert rec["candidates"]["quant"]["gate_ok"] is False
    assert rec["name"] == "student"
    ort["latency_b1_runs_ms"] = [3.0 + 0.01 * i for i in range(50)]
    ev["models"]["teacher"]["latency_b1_runs_ms"] = [10.0 + 0.01 * i for i in range(50)]
    rec = recommend(ev)
    assert rec["candidates"]["teacher-ort-int8"]["qualifies"] and rec["name"] == "teacher-ort-int8"
    assert rec["vs_ort_int8"] is None
    assert "unpaired" in rec["candidates"]["teacher-ort-int8"]["gate_why"]
    doc = Doc()
    section(ev, doc)
    assert "teacher-ort-int8, the teacher itself exported to ONNX Runtime int8" in doc.markdown()


def test_absent_ort_int8_and_missing_fields_do_not_break_the_answer():
    ev = metrics({"teacher": entry(0.80, 10.0, 80_000_000)}, reference="teacher")
    doc = Doc()
    rec = section(ev, doc)
    assert rec["name"] == "teacher" and "no compressed model was evaluated" in rec["reason"]
