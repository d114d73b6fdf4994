"""The quantize stage at batch 1: what ORT's BERT optimizer fused, latency at 1 vs 2 intra-op threads, the profiler's
top operators; and a BiLSTM student going through the same stage unchanged."""

from __future__ import annotations

from tests.compression.conftest import LABELS, make_ctx


def test_quantize_reports_fusions_threads_and_profile_for_a_bert(tmp_path, tiny_teacher, data_stage):
    from llmopt.report.render import Doc
    from llmopt.stages import STAGES
    from llmopt.stages.quantize import QuantizeConfig, run

    ctx = make_ctx(tmp_path, "01-quantize", {"data": data_stage})
    m = run(QuantizeConfig(id="q", model=str(tiny_teacher), max_length=32, latency_threads=[1, 2], profile=True,
                           latency_runs=10), ctx).metrics
    assert m["fused_for_ort"] and m["fused_ops"]["Attention"] == 2 and m["fused_ops"]["SkipLayerNormalization"] >= 2
    assert m["fused_ops"].get("EmbedLayerNormalization") == 1
    assert "QAttention" in m["op_types"] and "Softmax" not in m["op_types"]  # one fused (int8) attention op
    assert set(m["latency_b1_p50_ms_by_threads"]) == {"1", "2"}
    assert all(v > 0 for v in m["latency_b1_p50_ms_by_threads"].values())
    ops = [p["op"] for p in m["profile"]]
    assert "QAttention" in ops and abs(sum(p["share"] for p in m["profile"]) - 1) < 0.05
    doc = Doc()
    STAGES["quantize"].section("q", m, doc)
    md = doc.markdown()
    assert "2 × Attention" in md and "2 threads:" in md and "ONNX Runtime profiler" in md


def test_a_bilstm_student_goes_through_the_quantize_stage_unchanged(tmp_path, tiny_teacher, data_stage):
    import numpy as np

    from llmopt.compression.rnn_student import textnet_student
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import HFClassifier, OrtClassifier, predict_all
    from llmopt.models import load_tokenizer, save_model
    from llmopt.stages.quantize import QuantizeConfig, run

    tok = load_tokenizer(tiny_teacher)
    src = tmp_path / "bilstm"
    save_model(textnet_student("bilstm", tok, LABELS, embed_dim=16, hidden=8), tok, src,
               inference={"max_length": 32, "truncation": "right"})
    ctx = make_ctx(tmp_path, "01-quantize", {"data": data_stage})
    m = run(QuantizeConfig(id="q", model=str(src), latency_runs=10, profile=True), ctx).metrics
    assert m["fused_for_ort"] is False and m["scheme"] == "dynamic_int8"
    assert "DynamicQuantizeLSTM" in m["op_types"] and m["size_ratio_vs_parent"] > 2  # int8 LSTM and embeddings
    assert m["agreement_with_fp32"] >= 0.9
    assert any(p["op"] in ("LSTM", "DynamicQuantizeLSTM") for p in m["profile"])
    dev = load_data_artifact(data_stage / "artifacts").texts("dev")
    np.testing.assert_allclose(predict_all(OrtClassifier(ctx.out_dir / "model"), dev),
                               predict_all(HFClassifier(src), dev), atol=0.05)
