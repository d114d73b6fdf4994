"""The speed gate: "faster" only when the interval of the paired latency ratio lies below 1 - margin."""

from __future__ import annotations

import time

import pytest

from llmopt.compression.gate import MARGIN, annotate_gates, speed_gate, verdict
from llmopt.eval.speed import compare_latency

TEXTS = [f"sentence number {i}" for i in range(40)]


def _sleeper(seconds: float):
    def predict(batch: list[str]) -> None:
        time.sleep(seconds)
    return predict


def _entry(size: int, runs: list[float] | None = None) -> dict:
    e = {"latency_b1_p50_ms": 1.0, "weights_bytes": size}
    if runs is not None:
        e["latency_b1_runs_ms"] = runs
    return e


def _timed(child, parent, runs=60):
    return compare_latency(child=child, parent=parent, texts=TEXTS, threads=1, runs=runs, warmup=3,
                           resamples=1000, seed=0)


def test_verdicts_from_the_interval():
    assert verdict([0.5, 0.96]) == "faster"
    assert verdict([0.5, 0.975]) == "no measurable difference"  # within the margin: not a speed-up
    assert verdict([0.9, 1.1]) == "no measurable difference"
    assert verdict([1.04, 1.2]) == "slower"
    assert verdict(None) == "not measured"
    assert MARGIN == pytest.approx(0.03)


def test_one_ms_child_against_two_ms_parent_is_faster():
    timing = _timed(_sleeper(0.001), _sleeper(0.002))
    g = speed_gate(_entry(10), _entry(20), "teacher", timing=timing)
    assert g["verdict"] == "faster" and g["faster"] and g["smaller"] and g["passed"]
    assert g["ratio_ci"][1] < 1 - MARGIN and g["margin"] == MARGIN
    assert g["speedup_b1"] > 1.1 and g["size_ratio"] == 2 and g["flag"] is None and g["parent"] == "teacher"
    assert g["method"] == "paired" and g["timing"]["runs"] == 60
    # the same speed-up, but the child is not smaller: flagged, not passed
    g = speed_gate(_entry(20), _entry(20), "teacher", timing=timing)
    assert g["faster"] and not g["passed"] and "not smaller" in g["flag"]


def test_identical_predictors_show_no_measurable_difference():
    same = _sleeper(0.001)
    g = speed_gate(_entry(10), _entry(20), "teacher", timing=_timed(same, same))
    assert g["verdict"] == "no measurable difference"
    assert not g["faster"] and not g["passed"] and g["smaller"]
    lo, hi = g["ratio_ci"]
    assert lo <= 1 <= hi or abs(g["latency_ratio"] - 1) < MARGIN
    assert "not measurably faster than teacher" in g["flag"]


def test_slower_child_fails():
    g = speed_gate(_entry(10), _entry(20), "p", timing=_timed(_sleeper(0.002), _sleeper(0.001), runs=30))
    assert g["verdict"] == "slower" and not g["passed"]


def test_the_committed_near_tie_no_longer_passes():
    # two separate runs whose p50s differ by 0.05% (the 0.9995x "speed-up" once committed)
    parent = [1.0 + 0.01 * (i % 7) for i in range(100)]
    child = [v * 0.9995 for v in parent]
    g = speed_gate(_entry(10, child), _entry(20, parent), "teacher")
    assert g["method"] == "unpaired" and g["verdict"] == "no measurable difference" and not g["passed"]
    # no runs and no paired timing: speed not measured, never passed
    g = speed_gate(_entry(10), _entry(20), "teacher")
    assert g["verdict"] == "not measured" and not g["passed"] and "not measured" in g["flag"]


def test_annotate_gates_uses_the_paired_timing_of_the_nearest_evaluated_ancestor(tmp_path):
    import json

    dirs = {}
    for sid, parent in (("student", "teacher"), ("int8", "student")):
        d = tmp_path / sid
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"parent": parent}))
        dirs[sid] = d
    entries = {"teacher": _entry(30), "int8": _entry(10)}
    timing = {"ratio": 0.5, "ratio_ci": [0.45, 0.55], "method": "paired"}
    annotate_gates(entries, {"teacher": "teacher", "int8": "int8"}, dirs, timings={"int8": timing})
    g = entries["int8"]["gate"]
    assert g["parent"] == "teacher" and g["passed"] and g["speedup_b1"] == pytest.approx(2)
    assert "gate" not in entries["teacher"]
