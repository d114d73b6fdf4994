"""Layer-wise distillation (TinyBERT hidden-state MSE, MiniLM attention KL) and narrow students cut from the teacher."""

from __future__ import annotations

import pytest

from tests.compression.conftest import make_ctx
from tests.compression.test_distill import QUICK


def _batch(tok, texts=("a great film", "a dull mess and far too long to sit through")):
    return dict(tok(list(texts), padding=True, return_tensors="pt"))


def test_each_layerwise_loss_is_zero_when_student_equals_teacher_and_positive_otherwise(tiny_teacher):
    import copy

    import torch

    from llmopt.models import load_classifier, load_tokenizer
    from llmopt.training.losses import LayerwiseKD, attention_kl, hidden_mse

    tok = load_tokenizer(tiny_teacher)
    teacher = load_classifier(tiny_teacher, attn_implementation="eager").eval()
    twin = copy.deepcopy(teacher)
    other = load_classifier(tiny_teacher, attn_implementation="eager").eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in other.bert.encoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = _batch(tok)
    mask = batch["attention_mask"]
    kw = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        t, s_same, s_other = teacher(**batch, **kw), twin(**batch, **kw), other(**batch, **kw)
    m3 = mask.unsqueeze(-1).float()
    assert hidden_mse(s_same.hidden_states, t.hidden_states, [0, 1], m3, include_embeddings=True).item() == 0.0
    assert attention_kl(s_same.attentions[-1], t.attentions[-1], mask).item() == pytest.approx(0.0, abs=1e-7)
    assert hidden_mse(s_other.hidden_states, t.hidden_states, [0, 1], m3).item() > 1e-3
    assert attention_kl(s_other.attentions[-1], t.attentions[-1], mask).item() > 1e-4
    # the hook the trainer calls: both terms together, zero for the twin, positive for the other
    for student, zero in ((twin, True), (other, False)):
        lw = LayerwiseKD(teacher, student, [0, 1], hidden_weight=1.0, attention_weight=1.0)
        assert lw.projection is None  # same width: no projection
        with torch.no_grad():
            got = lw(student(**batch, **lw.student_outputs), batch).item()
        assert (got == pytest.approx(0.0, abs=1e-6)) if zero else got > 1e-3


def test_attention_kl_leaves_out_padded_queries_and_matches_a_hand_value():
    import math

    import torch

    from llmopt.training.losses import attention_kl

    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # [batch 1, head 1, query 2, key 2]
    s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_kl(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(want, rel=1e-5)  # query 2 is padding
    assert attention_kl(s, t, torch.tensor([[1, 1]])).item() == pytest.approx((want + math.log(2)) / 2, rel=1e-5)


def test_narrow_student_is_cut_from_the_teacher_and_learns_through_a_projection(tiny_teacher):
    import torch

    from llmopt.compression.distillation import narrow_student
    from llmopt.errors import RecipeError
    from llmopt.models import load_classifier, load_tokenizer
    from llmopt.training.losses import LayerwiseKD, uniform_mapping

    teacher = load_classifier(tiny_teacher)
    t_cfg = teacher.config
    head = t_cfg.hidden_size // t_cfg.num_attention_heads
    student = narrow_student(teacher, [1], hidden_size=t_cfg.hidden_size - head)
    assert student.config.hidden_size == t_cfg.hidden_size - head
    assert student.config.num_attention_heads == t_cfg.num_attention_heads - 1
    h = student.config.hidden_size
    t_q = teacher.state_dict()["bert.encoder.layer.1.attention.self.query.weight"]
    assert torch.equal(student.state_dict()["bert.encoder.layer.0.attention.self.query.weight"], t_q[:h, :h])
    with pytest.raises(RecipeError, match="multiple of the teacher's head size"):
        narrow_student(teacher, [1], hidden_size=head + 1)
    assert uniform_mapping(2, 6) == [2, 5] and uniform_mapping(3, 6) == [1, 3, 5] and uniform_mapping(1, 6) == [5]

    lw = LayerwiseKD(teacher, student, [1], hidden_weight=1.0)
    assert lw.projection is not None and student.kd_projection is lw.projection  # trained with the student
    batch = _batch(load_tokenizer(tiny_teacher))
    loss = lw(student(**batch, **lw.student_outputs), batch)
    loss.backward()
    assert lw.projection.weight.grad is not None and float(lw.projection.weight.grad.abs().sum()) > 0
    lw.detach()
    assert not hasattr(student, "kd_projection")
    assert not any(k.startswith("kd_projection") for k in student.state_dict())


def test_distill_narrow_student_with_hidden_and_attention_losses(tmp_path, tiny_teacher, data_stage):
    import json

    from safetensors import safe_open

    from llmopt.models import load_classifier
    from llmopt.stages.distill import DistillConfig, run

    ctx = make_ctx(tmp_path, "01-distill", {"data": data_stage})
    m = run(DistillConfig(id="distill", teacher=str(tiny_teacher), vocab_trim=True, hidden_loss_weight=1.0,
                          attention_loss_weight=1.0,
                          student_config={"num_hidden_layers": 1, "hidden_size": 16, "init": "teacher"}, **QUICK),
            ctx).metrics
    folder = ctx.out_dir / "model"
    model = load_classifier(folder)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 1
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "kd_projection" in k]  # the projection is not part of the student
    assert m["layerwise_loss"] == {"hidden_weight": 1.0, "attention_weight": 1.0, "mapping": [0], "projection": True}
    assert m["vocab"]["vocab_after"] < m["vocab"]["vocab_before"]
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == m["vocab"]["vocab_after"]
    assert m["global_steps"] == 4 and m["student_params"] < m["teacher_params"]
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    assert losses and all(v == v for v in losses)  # finite


def test_layerwise_losses_need_a_student_built_from_the_teacher():
    from pydantic import ValidationError

    from llmopt.stages.distill import DistillConfig

    with pytest.raises(ValidationError, match="set them to 0 for student_family"):
        DistillConfig(id="d", teacher="t", student_family={"kind": "cnn"}, attention_loss_weight=1.0)
