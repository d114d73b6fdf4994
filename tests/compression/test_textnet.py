"""Non-transformer students (BiLSTM, CNN): padding-invariant, saved/loaded through the Auto classes, exported to ONNX
(fp32 and dynamic int8) matching PyTorch, and distilled through the distill stage."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compression.conftest import LABELS, make_ctx
from tests.compression.test_distill import QUICK

TEXTS = ["a great film", "boring and far too long , i hated every minute of it", "charming", "a dull mess"]


def _student(kind, tiny_teacher):
    import torch

    from llmopt.compression.rnn_student import textnet_student
    from llmopt.models import load_classifier, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_teacher)
    emb = load_classifier(tiny_teacher).get_input_embeddings().weight
    return textnet_student(kind, tok, LABELS, embed_dim=16, hidden=12, layers=2 if kind == "bilstm" else 1,
                           teacher_embeddings=emb).eval(), tok


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_padding_does_not_change_a_texts_logits(kind, tiny_teacher):
    import torch

    model, tok = _student(kind, tiny_teacher)
    with torch.no_grad():
        batched = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in TEXTS])
    assert torch.allclose(batched, alone, atol=1e-5)


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_textnet_saves_loads_and_exports_to_onnx_matching_pytorch(kind, tiny_teacher, tmp_path):
    import onnx
    import torch

    from llmopt.compression.onnx_export import export_variants
    from llmopt.eval.predictors import HFClassifier, OrtClassifier, predict_all
    from llmopt.models import load_classifier, save_model

    model, tok = _student(kind, tiny_teacher)
    src = tmp_path / "student"
    save_model(model, tok, src, inference={"max_length": 32, "truncation": "right"})
    assert sorted(p.name for p in src.glob("*.safetensors")) == ["model.safetensors"]
    again = load_classifier(src).eval()  # AutoModelForSequenceClassification, no remote code
    assert type(again).__name__ == "TextNetForSequenceClassification" and again.config.kind == kind
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(again(**enc).logits, model(**enc).logits)

    built = export_variants(src, tmp_path / "onnx", ["fp32", "dynamic_int8"], max_length=32)
    ref = predict_all(HFClassifier(src), TEXTS)
    fp32 = OrtClassifier(built["fp32"], threads=1)
    # fp32 ONNX Runtime vs PyTorch: the same function, float rounding only
    np.testing.assert_allclose(fp32.logits(TEXTS), again(**enc).logits.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(predict_all(fp32, TEXTS), ref, atol=1e-5)
    for i, t in enumerate(TEXTS):  # batch 1 (the latency harness's shape) gives the same logits as the batch
        np.testing.assert_allclose(fp32.logits([t])[0], again(**enc).logits[i].detach().numpy(), atol=1e-4)
    int8 = OrtClassifier(built["dynamic_int8"], threads=1)
    np.testing.assert_allclose(predict_all(int8, TEXTS), ref, atol=0.05)  # int8 weights: close, not equal
    ops = {n.op_type for n in onnx.load(str(built["dynamic_int8"] / "model.onnx")).graph.node}
    assert ({"DynamicQuantizeLSTM"} if kind == "bilstm" else {"ConvInteger"}) <= ops
    # the embedding table is int8 too: the Gather reads a quantized initializer
    graph = onnx.load(str(built["dynamic_int8"] / "model.onnx")).graph
    inits = {t.name: t.data_type for t in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert gathers and all(inits[n.input[0]] in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for n in gathers)


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_distill_trains_a_textnet_student_whose_loss_falls(kind, tmp_path, tiny_teacher, data_stage):
    from llmopt.models import load_classifier, load_tokenizer
    from llmopt.report.render import Doc
    from llmopt.stages import STAGES
    from llmopt.stages.distill import DistillConfig, run

    ctx = make_ctx(tmp_path, "01-distill", {"data": data_stage})
    train = {**QUICK["train"], "max_steps": 40, "learning_rate": 1e-2, "warmup_ratio": 0.0}
    m = run(DistillConfig(id="distill", teacher=str(tiny_teacher), vocab_trim=True,
                          student_family={"kind": kind, "embed_dim": 16, "hidden": 16}, kd={"alpha": 0.2},
                          train=train), ctx).metrics
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # it learns the teacher's logits on 48 rows
    folder = ctx.out_dir / "model"
    model = load_classifier(folder)
    assert model.config.kind == kind and m["student_family"] == kind
    assert len(load_tokenizer(folder)) == model.config.vocab_size == m["vocab"]["vocab_after"]
    assert m["student_params"] < m["teacher_params"]
    doc = Doc()
    STAGES["distill"].section("distill", m, doc)
    assert f"a {kind} (embed 16" in doc.markdown()
