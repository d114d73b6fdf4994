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
    lat = {s: r["latency_b1_p50_ms"] for s, r in m["candidates"].items()}
    assert set(lat) == {"fp32", "dynamic_int8"}
    assert m["scheme"] == min(lat, key=lat.get)


def test_onnx_folder_without_config_is_refused(tmp_path):
    from llmopt.compression.onnx_export import check_onnx_dir
    from llmopt.errors import ModelError

    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="id2label"):
        check_onnx_dir(tmp_path)
