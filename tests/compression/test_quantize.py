"""ONNX export and quantization: outputs stay close to PyTorch fp32, artifacts reload without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compression.conftest import make_ctx
from tests.conftest import make_rows

TEXTS = [r["text"] for r in make_rows(16, seed=5)]


def _torch_probs(folder, texts):
    from llmopt.eval.predictors import HFClassifier

    return HFClassifier(folder, 64).predict_proba(texts)


@pytest.mark.parametrize("scheme", ["fp32", "dynamic_int8", "static_int8", "weight_only_int8", "weight_only_int4"])
def test_quantized_outputs_stay_close_to_fp32(tmp_path, tiny_bert, data_stage, scheme):
    from llmopt.eval.predictors import OrtClassifier, load_predictor
    from llmopt.stages.quantize import QuantizeConfig, run

    ctx = make_ctx(tmp_path, "01-q", {"data": data_stage})
    res = run(QuantizeConfig(id="q", model=str(tiny_bert), scheme=scheme, max_length=64, check_rows=10), ctx)
    folder = ctx.out_dir / "model"
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".safetensors", ".bin", ".pt")) == [
        "model.onnx"]
    pred = load_predictor(folder, 64, 1)
    assert isinstance(pred, OrtClassifier) and pred.runtime == f"onnxruntime-{scheme}"
    ref = _torch_probs(tiny_bert, TEXTS)
    got = pred.predict_proba(TEXTS)
    assert got.shape == ref.shape
    tol = 1e-4 if scheme == "fp32" else 2e-2
    assert np.abs(got - ref).max() < tol
    assert res.metrics["parent"] == str(tiny_bert) and res.metrics["scheme"] == scheme
    if scheme in ("dynamic_int8", "weight_only_int8"):
        assert res.metrics["weights_bytes"] < res.metrics["parent_weights_bytes"]
    if scheme.startswith("weight_only"):
        import onnx

        ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
        assert "MatMulNBits" in ops  # the weights really are stored in 8 / 4 bits


def test_auto_picks_a_measured_candidate(tmp_path, tiny_bert, data_stage):
    from llmopt.stages.quantize import QuantizeConfig, run

    ctx = make_ctx(tmp_path, "01-q", {"data": data_stage})
    cfg = QuantizeConfig(id="q", model=str(tiny_bert), scheme="auto", candidates=["fp32", "dynamic_int8"],
                         max_length=64, check_rows=10, latency_runs=10)
    m = run(cfg, ctx).metrics
    ratio = {s: r["latency_ratio_vs_fp32"] for s, r in m["candidates"].items()}
    assert set(ratio) == {"fp32", "dynamic_int8"}
    assert m["scheme"] == min(ratio, key=ratio.get)  # chosen on paired ratios against the fp32 export
    for r in m["candidates"].values():
        lo, hi = r["latency_ratio_vs_fp32_ci"]
        assert lo <= r["latency_ratio_vs_fp32"] <= hi and "latency_b1_p50_ms" in r


def test_onnx_folder_without_config_is_refused(tmp_path):
    from llmopt.compression.onnx_export import check_onnx_dir
    from llmopt.errors import ModelError

    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="id2label"):
        check_onnx_dir(tmp_path)


# --- graph structure and file size: what each scheme really stores --------------------------------------------
# The tiny_bert fixture is all embedding (30k x 32 floats against 2 x 8k in Linear layers), so file sizes would
# barely move whatever the Linear layers become. This model has a 200-word vocabulary and 128-wide layers:
# its 14 Linear layers hold ~400k of its ~440k parameters, so a scheme that really stores them in 8 or 4 bits
# shows it in the file size.

SIZE_SCHEMES = ("fp32", "dynamic_int8", "static_int8", "weight_only_int8", "weight_only_int4")


@pytest.fixture(scope="module")
def linear_heavy_bert(other_tokenizer_bert, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(other_tokenizer_bert))
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=64, num_labels=2, pad_token_id=0)
    model = BertForSequenceClassification(cfg)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert sum(m.weight.numel() for m in linear) > 0.85 * sum(p.numel() for p in model.parameters())
    out = tmp_path_factory.mktemp("linear-heavy") / "bert"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out, len(linear)


@pytest.fixture(scope="module")
def exported(linear_heavy_bert, tmp_path_factory):
    """scheme -> model.onnx of linear_heavy_bert, built the way the quantize and search stages build it."""
    from llmopt.compression.onnx_export import build_onnx_model

    src, _ = linear_heavy_bert
    root = tmp_path_factory.mktemp("onnx")
    calib = [r["text"] for r in make_rows(32, seed=9)]
    out = {}
    for scheme in SIZE_SCHEMES:
        build_onnx_model(src, root / scheme, scheme, calib, max_length=32)
        out[scheme] = root / scheme / "model.onnx"
    return out


def _graph(path):
    import onnx

    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    return m, inits, producer


def _ops(m):
    from collections import Counter

    return Counter(n.op_type for n in m.graph.node)


def _attrs(node):
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _float_weight_matmuls(m, inits):
    """MatMul/Gemm nodes that still multiply by a float weight stored as an initializer."""
    import onnx

    return [n for n in m.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
            and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]


def test_static_int8_is_qdq_with_int8_weights_and_calibrated_activations(exported, linear_heavy_bert):
    import onnx

    _, n_linear = linear_heavy_bert
    m, inits, producer = _graph(exported["static_int8"])
    ops = _ops(m)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0  # QuantFormat.QDQ
    assert not _float_weight_matmuls(m, inits)
    weight_mms = 0
    for n in (n for n in m.graph.node if n.op_type in ("MatMul", "Gemm")):
        a, b = (producer.get(i) for i in n.input[:2])
        assert a is not None and a.op_type == "DequantizeLinear", n.name  # every input is quantized ...
        q = producer.get(a.input[0])
        assert q is not None and q.op_type == "QuantizeLinear", n.name
        assert q.input[1] in inits, n.name  # ... with a scale fixed by calibration (static, not computed at run time)
        assert b is not None and b.op_type == "DequantizeLinear", n.name
        if b.input[0] in inits:
            assert inits[b.input[0]].data_type == onnx.TensorProto.INT8, n.name
            weight_mms += 1
    assert weight_mms == n_linear  # every Linear layer's weight is stored in int8
    assert exported["static_int8"].stat().st_size < 0.5 * exported["fp32"].stat().st_size


def test_dynamic_int8_quantizes_activations_at_run_time(exported):
    import onnx

    m, inits, _ = _graph(exported["dynamic_int8"])
    ops = _ops(m)
    assert ops["DynamicQuantizeLinear"] > 0 and ops["MatMulInteger"] > 0
    assert ops["QAttention"] > 0 and ops["Attention"] == 0  # the fused attention's QKV weights are int8 too
    assert not _float_weight_matmuls(m, inits)
    per_channel = 0
    for n in m.graph.node:
        if n.op_type == "MatMulInteger" and n.input[1] in inits:
            w = inits[n.input[1]]
            assert w.data_type == onnx.TensorProto.INT8
            zp = inits[n.input[3]]  # one weight zero point (and scale) per output column: per-channel
            assert list(zp.dims) == [w.dims[1]], n.name
            per_channel += 1
    assert per_channel > 0
    assert exported["dynamic_int8"].stat().st_size < 0.5 * exported["fp32"].stat().st_size


def _nbits(path):
    """(MatMulNBits attributes, bytes of their packed weights) for the model at `path`."""
    import math

    import onnx

    m, inits, _ = _graph(path)
    # every encoder MatMul weight went into MatMulNBits (the quantizer leaves Gemm, i.e. pooler and head, in fp32)
    assert not [n for n in _float_weight_matmuls(m, inits) if n.op_type == "MatMul"]
    nodes = [n for n in m.graph.node if n.op_type == "MatMulNBits"]
    assert nodes
    attrs, packed = [], 0
    for n in nodes:
        a = _attrs(n)
        w = inits[n.input[1]]
        assert w.data_type == onnx.TensorProto.UINT8
        # [N, blocks per column, bytes per block]: the weights really are packed at a["bits"] per value
        assert list(w.dims) == [a["N"], math.ceil(a["K"] / a["block_size"]), a["block_size"] * a["bits"] // 8]
        packed += math.prod(w.dims)
        attrs.append(a)
    return attrs, packed


def test_weight_only_int4_and_int8_pack_weights_in_4_and_8_bits(exported):
    int8, int8_bytes = _nbits(exported["weight_only_int8"])
    int4, int4_bytes = _nbits(exported["weight_only_int4"])
    assert {a["bits"] for a in int8} == {8} and {a["bits"] for a in int4} == {4}
    assert {a["block_size"] for a in int8 + int4} == {32}
    assert len(int8) == len(int4)
    assert int4_bytes * 2 == int8_bytes
    size = {s: exported[s].stat().st_size for s in ("fp32", "weight_only_int8", "weight_only_int4")}
    assert size["weight_only_int4"] < size["weight_only_int8"] < size["fp32"]
    assert size["weight_only_int8"] - size["weight_only_int4"] >= 0.9 * (int8_bytes - int4_bytes)


def test_weight_only_stores_no_fp32_attention_weights(exported):
    m, _, _ = _graph(exported["weight_only_int4"])
    assert _ops(m)["Attention"] == 0
