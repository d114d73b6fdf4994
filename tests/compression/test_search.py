"""Search: Pareto frontier and choice by hand, and a search that resumes after an interruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compression.conftest import make_ctx


def _c(acc, lat, size, passed=True, ratio=None):
    return {"accuracy": acc, "latency_b1_p50_ms": lat, "size_bytes": size,
            "gate": {"passed": passed, "latency_ratio": ratio, "verdict": "faster" if passed else "no measurable difference",
                     "flag": None if passed else "not measurably faster than teacher"}}


def test_pareto_and_choice_by_hand():
    from llmopt.compression.search import choose, pareto, threshold

    cands = {"a": _c(0.90, 2.0, 10), "b": _c(0.88, 1.0, 8), "c": _c(0.87, 1.5, 9), "d": _c(0.91, 0.5, 20, False)}
    assert pareto(cands) == ["a", "b", "d"]  # c is worse than b on every axis
    assert threshold(0.9, 0.01, "relative") == pytest.approx(0.891)
    assert threshold(0.9, 0.01, "absolute") == pytest.approx(0.89)
    assert choose(cands, 0.88, "latency") == ("b", "within tolerance")
    assert choose(cands, 0.85, "size")[0] == "b"
    # d is fastest and most accurate but failed the speed/size gate: never chosen
    best, why = choose(cands, 0.905, "latency")
    assert best == "a" and "closest" in why
    assert choose({}, 0.9, "latency") == (None, "no candidate finished")


def test_a_candidate_that_failed_the_gate_is_never_chosen():
    from llmopt.compression.search import choose

    best, why = choose({"x": _c(0.95, 0.1, 1, False), "y": _c(0.5, 1, 1, False)}, 0.9, "latency")
    assert best is None
    assert "none of the 2 candidates passed the speed/size gate" in why and "x: not measurably faster" in why


def test_latency_choice_uses_the_paired_ratio_to_the_teacher():
    from llmopt.compression.search import choose

    # p50s measured apart say b; the ratios measured beside the teacher say a
    cands = {"a": _c(0.90, 1.2, 10, ratio=0.40), "b": _c(0.90, 1.0, 10, ratio=0.55)}
    assert choose(cands, 0.89, "latency")[0] == "a"


def test_search_resumes_finished_candidates(tmp_path, tiny_teacher, data_stage, monkeypatch):
    from llmopt.stages import search
    from llmopt.stages.search import SearchConfig, run

    cfg = SearchConfig(id="search", teacher=str(tiny_teacher), space={"layers": [1], "ffn_keep": [1.0, 0.5],
                       "vocab_trim": [True], "scheme": ["dynamic_int8"]}, latency_runs=10, warmup=2,
                       train={"max_steps": 2, "batch_size": 8, "max_length": 32, "early_stopping_patience": None})
    ctx = make_ctx(tmp_path, "01-search", {"data": data_stage})
    first = run(cfg, ctx).metrics
    names = set(first["candidates"])
    assert names == {"L1-ffn100-trim-dynamic_int8", "L1-ffn50-trim-dynamic_int8"}
    assert first["chosen"] in names and first["chosen_test"]["n"] == 24
    assert (ctx.out_dir / "model" / "model.onnx").is_file()
    assert set(first["pareto"]) <= names and first["pareto"]
    assert "noisy" in first["note"]  # 24 dev rows cannot resolve a 1% tolerance
    for c in first["candidates"].values():  # timed beside the teacher; the ORT int8 export of it reported too
        assert c["gate"]["method"] == "paired" and c["gate"]["parent"] == "teacher" and len(c["gate"]["ratio_ci"]) == 2
        assert c["gate"]["verdict"] in ("faster", "slower", "no measurable difference")
        assert c["gate_vs_ort_int8"]["parent"] == "teacher-ort-int8" and c["gate_vs_ort_int8"]["method"] == "paired"
    assert first["chosen"] in first["passed_gate"]
    assert first["teacher_ort_int8_dev"]["accuracy"] is not None
    assert (ctx.stage_dir / "onnx" / "_teacher-ort-int8" / "model.onnx").is_file()
    from llmopt.report.render import Doc
    from llmopt.stages import STAGES

    doc = Doc()
    STAGES["search"].section("search", first, doc)
    md = doc.markdown()
    assert "Accuracy-budget search (search)" in md and first["chosen"] in md
    assert list(doc.figures) == ["search-pareto.svg"]

    # interrupted after the first candidate: its result stays, the second is redone from its saved student
    (ctx.stage_dir / "candidates" / "L1-ffn50-trim-dynamic_int8.json").unlink()
    kept = (ctx.stage_dir / "candidates" / "L1-ffn100-trim-dynamic_int8.json").read_text()

    def no_training(*a, **k):
        raise AssertionError("a finished structure was trained again")

    monkeypatch.setattr(search, "_train_structure", no_training)
    again = run(cfg, ctx).metrics
    assert again["resumed_candidates"] == ["L1-ffn100-trim-dynamic_int8"]
    assert set(again["candidates"]) == names
    assert (ctx.stage_dir / "candidates" / "L1-ffn100-trim-dynamic_int8.json").read_text() == kept


def test_no_candidate_passing_the_gate_keeps_no_model(tmp_path, tiny_teacher, data_stage, monkeypatch):
    import json

    import llmopt.eval.speed as speed
    from llmopt.errors import ModelError
    from llmopt.stages.evaluate import EvaluateConfig
    from llmopt.stages.evaluate import run as evaluate
    from llmopt.stages.search import SearchConfig, run

    def no_difference(**kw):  # every paired timing: a tie
        return {"method": "paired", "ratio": 1.0, "ratio_ci": [0.99, 1.01], "runs": kw["runs"]}

    monkeypatch.setattr(speed, "compare_latency", no_difference)
    cfg = SearchConfig(id="search", teacher=str(tiny_teacher), space={"layers": [1], "ffn_keep": [1.0],
                       "vocab_trim": [True], "scheme": ["dynamic_int8"]}, latency_runs=10, warmup=2,
                       ort_int8_baseline=False,
                       train={"max_steps": 2, "batch_size": 8, "max_length": 32, "early_stopping_patience": None})
    ctx = make_ctx(tmp_path, "01-search", {"data": data_stage})
    m = run(cfg, ctx).metrics
    assert m["chosen"] is None and m["passed_gate"] == [] and "chosen_test" not in m
    assert "none of the 1 candidates passed the speed/size gate" in m["choice"]
    assert "no measurable difference" in m["choice"]
    assert not (ctx.out_dir / "model").exists()
    assert m["teacher_ort_int8_dev"] is None
    from llmopt.report.render import Doc
    from llmopt.stages import STAGES

    doc = Doc()
    STAGES["search"].section("search", m, doc)
    assert "No model kept: none of the 1 candidates passed" in doc.markdown()

    # a later evaluate naming the search stage: one clear error, not a traceback
    (ctx.stage_dir / "metrics.json").write_text(json.dumps(m))
    ev_ctx = make_ctx(tmp_path, "02-evaluate", {"data": data_stage, "search": ctx.stage_dir})
    with pytest.raises(ModelError, match="stage 'search' wrote no model .*none of the 1 candidates passed"):
        evaluate(EvaluateConfig(id="evaluate", models=["search"], baselines=[]), ev_ctx)
