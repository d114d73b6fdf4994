"""Search over student families: the grid per family, names kept for resume, and the gate that a chosen candidate
must pass — a tiny search where the otherwise best candidate is forced to fail it."""

from __future__ import annotations

from tests.compression.conftest import make_ctx


def test_grid_applies_each_option_only_to_the_family_it_means_something_for():
    from llmopt.compression.search import candidate_grid, candidate_name, describe

    grid = candidate_grid([1, 2], [1.0, 0.5], [True], ["dynamic_int8"], family=["transformer", "bilstm", "cnn"],
                          hidden=[None, 16], embed_dim=[32], attention_loss=[0.0, 1.0])
    names = [candidate_name(c) for c in grid]
    assert len(names) == len(set(names))
    tr = [c for c in grid if c["family"] == "transformer"]
    assert len(tr) == 2 * 2 * 2 * 2  # layers × hidden × ffn × attention loss
    assert "L2-ffn100-trim-dynamic_int8" in names  # the name earlier versions gave: resumable
    assert "L1-h16-ffn50-att1-trim-dynamic_int8" in names
    lstm = [c for c in grid if c["family"] == "bilstm"]
    assert {(c["layers"], c["hidden"]) for c in lstm} == {(1, 128), (1, 16), (2, 128), (2, 16)}  # null → 128 units
    cnn = [c for c in grid if c["family"] == "cnn"]
    assert len(cnn) == 2 and all("ffn_keep" not in c and "attention_loss" not in c for c in cnn + lstm)
    assert describe(cnn[0]).startswith("CNN, 16 maps") and "attention KL 1" in describe(tr[-1])


def test_search_never_chooses_a_candidate_that_fails_the_gate(tmp_path, tiny_teacher, data_stage, monkeypatch):
    """Two candidates, a CNN and a 1-layer transformer. The CNN is made the fastest (ratio 0.05) and the most
    accurate, but its gate fails (as if it were larger than the teacher): the transformer must be chosen."""
    import llmopt.compression.gate as gate
    import llmopt.eval.speed as speed
    from llmopt.stages.search import SearchConfig, run

    def fast(**kw):
        return {"method": "paired", "ratio": 0.5, "ratio_ci": [0.45, 0.55], "runs": kw["runs"]}

    real_gate = gate.speed_gate

    def gate_failing_the_cnn(res, parent, name, **kw):
        g = real_gate(res, parent, name, **kw)
        if res.get("family") == "cnn":
            g.update(passed=False, smaller=False, latency_ratio=0.05, flag="not smaller than teacher")
        return g

    monkeypatch.setattr(speed, "compare_latency", fast)
    monkeypatch.setattr(gate, "speed_gate", gate_failing_the_cnn)
    extra = tmp_path / "unlabelled.txt"
    extra.write_text("a film i will watch again\nnot worth the ticket\n")
    cfg = SearchConfig(id="search", teacher=str(tiny_teacher), max_drop=0.99, ort_int8_baseline=False,
                       space={"family": ["transformer", "cnn"], "layers": [1], "ffn_keep": [1.0], "hidden": [None],
                              "embed_dim": [16]},
                       extra_texts=[str(extra)], latency_runs=10, warmup=2, latency_threads=[1, 2],
                       train={"max_steps": 2, "batch_size": 8, "max_length": 32, "early_stopping_patience": None},
                       textnet_train={"max_steps": 2, "batch_size": 8, "max_length": 32,
                                      "early_stopping_patience": None})
    m = run(cfg, make_ctx(tmp_path, "01-search", {"data": data_stage})).metrics
    cnn, tr = "cnn-h128-e16-trim-dynamic_int8", "L1-ffn100-trim-dynamic_int8"
    assert set(m["candidates"]) == {cnn, tr}
    assert m["candidates"][cnn]["family"] == "cnn" and not m["candidates"][cnn]["gate"]["passed"]
    assert m["candidates"][cnn]["gate"]["latency_ratio"] < m["candidates"][tr]["gate"]["latency_ratio"]
    assert m["passed_gate"] == [tr] and m["chosen"] == tr and m["choice"] == "within tolerance"
    assert m["unlabelled_rows"] == 2 and m["transfer_rows"] == 48 + 2
    assert set(m["candidates"][tr]["latency_b1_p50_ms_by_threads"]) == {"1", "2"}
    from llmopt.report.render import Doc
    from llmopt.stages import STAGES

    doc = Doc()
    STAGES["search"].section("search", m, doc)
    md = doc.markdown()
    assert "CNN, 128 maps per kernel, embeddings 16" in md and "p50 ms, 2 threads" in md
