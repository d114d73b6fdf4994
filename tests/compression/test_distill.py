"""Distillation: the KD loss by hand, students copied from teacher layers, tokenizers that differ."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.compression.conftest import make_ctx

QUICK = dict(train=dict(max_steps=4, batch_size=8, epochs=1, max_length=32, logging_steps=1,
                        early_stopping_patience=None))


def test_kd_loss_matches_hand_computed_value():
    import torch

    from llmopt.training.losses import kd_loss

    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    # T=2: p_s = softmax([.5, 0]), p_t = softmax([0, .5]) = p_s reversed, so
    # KL(p_t || p_s) = (2σ(.5) - 1) * .5 = .5 * tanh(.25) = 0.122459; CE = log(1 + e^-1) = 0.313262
    # loss = .5 * 4 * 0.122459 + .5 * 0.313262 = 0.401549
    assert kd_loss(s, t, y, 2.0, 0.5).item() == pytest.approx(0.401549, abs=1e-5)
    assert 0.5 * 4 * 0.5 * math.tanh(0.25) + 0.5 * math.log(1 + math.exp(-1)) == pytest.approx(0.401549, abs=1e-6)
    # unlabelled rows (-100) keep only the KD term; alpha=0 is plain cross-entropy
    assert kd_loss(s, t, torch.tensor([-100]), 2.0, 0.5).item() == pytest.approx(0.244918, abs=1e-5)
    assert kd_loss(s, t, y, 2.0, 0.0).item() == pytest.approx(0.313262, abs=1e-5)


def test_student_copies_the_chosen_teacher_layers(tiny_teacher):
    import torch

    from llmopt.compression.distillation import evenly_spaced, student_from_teacher
    from llmopt.models import load_classifier

    teacher = load_classifier(tiny_teacher)
    student = student_from_teacher(teacher, [1])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    assert torch.equal(s_sd["bert.encoder.layer.0.attention.self.query.weight"],
                       t_sd["bert.encoder.layer.1.attention.self.query.weight"])
    assert not torch.equal(s_sd["bert.encoder.layer.0.attention.self.query.weight"],
                           t_sd["bert.encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(s_sd["classifier.weight"], t_sd["classifier.weight"])
    assert evenly_spaced(6, 3) == [0, 2, 5] and evenly_spaced(12, 4) == [0, 4, 7, 11]


def test_distill_stage_saves_a_reloadable_student(tmp_path, tiny_teacher, data_stage):
    from transformers import AutoModelForSequenceClassification

    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.stages.distill import DistillConfig, run

    from llmopt.stages.augment import AugmentConfig, run as augment

    actx = make_ctx(tmp_path, "01-augment", {"data": data_stage})
    aug = augment(AugmentConfig(id="augment", ops=["swap", "delete"]), actx).metrics
    ctx = make_ctx(tmp_path, "02-distill", {"data": data_stage, "augment": actx.stage_dir})
    m = run(DistillConfig(id="distill", teacher=str(tiny_teacher), layers=[0], transfer="augment",
                          hidden_loss_weight=1.0, **QUICK), ctx).metrics
    folder = ctx.out_dir / "model"
    assert AutoModelForSequenceClassification.from_pretrained(str(folder)).config.num_hidden_layers == 1
    assert 48 < aug["transfer_rows"] <= 96  # swap and delete variants of 48 rows, minus unchanged/duplicates
    assert m["transfer_rows"] == 48 + aug["transfer_rows"] and m["unlabelled_rows"] == aug["transfer_rows"]
    assert m["global_steps"] == 4 and m["transfer_stage"] == "augment"
    assert list((ctx.run_dir / "cache" / "teacher_logits").glob("teacher_logits-*.npz"))  # computed once, cached
    dev = load_data_artifact(data_stage / "artifacts").dev
    pred = predict_all(HFClassifier(folder, 32), [r["text"] for r in dev]).argmax(1)
    y = np.array([r["label"] == "positive" for r in dev], dtype=int)
    assert float((pred == y).mean()) == pytest.approx(m["dev_accuracy"])


def _agreement_above_chance(a: np.ndarray, b: np.ndarray) -> float:
    """Observed agreement minus the agreement two independent predictors with these label rates would have."""
    chance = sum(float((a == k).mean() * (b == k).mean()) for k in np.union1d(a, b))
    return float((a == b).mean()) - chance


def test_student_with_a_different_tokenizer_learns_from_the_teacher(tmp_path, tiny_bert, other_tokenizer_bert,
                                                                    data_stage):
    """Cross-tokenizer KD must transfer knowledge: the student beats the majority class on test and agrees with
    a trained teacher well above chance (a stub that saves the untrained student fails both)."""
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval.predictors import HFClassifier, predict_all
    from llmopt.models import load_tokenizer
    from llmopt.stages.distill import DistillConfig
    from llmopt.stages.distill import run as distill
    from llmopt.stages.finetune import FinetuneConfig
    from llmopt.stages.finetune import run as finetune

    t_tok, s_tok = load_tokenizer(tiny_bert), load_tokenizer(other_tokenizer_bert)
    assert t_tok.vocab_size != s_tok.vocab_size
    long = dict(epochs=15, batch_size=8, learning_rate=2e-3, max_length=32, early_stopping_patience=None,
                warmup_ratio=0.0)
    t_ctx = make_ctx(tmp_path, "01-teacher", {"data": data_stage})
    finetune(FinetuneConfig(id="teacher", model=str(tiny_bert), train=long), t_ctx)
    ctx = make_ctx(tmp_path, "02-distill", {"data": data_stage, "teacher": t_ctx.stage_dir})
    m = distill(DistillConfig(id="distill", teacher="teacher", student_model=str(other_tokenizer_bert),
                              kd={"alpha": 1.0}, train=long), ctx).metrics
    saved = load_tokenizer(ctx.out_dir / "model")
    assert saved.get_vocab() == s_tok.get_vocab()
    assert m["student_params"] < m["teacher_params"]

    data = load_data_artifact(data_stage / "artifacts")
    texts, y = data.texts("test"), np.array(data.ids(data.test))
    teacher = predict_all(HFClassifier(t_ctx.out_dir / "model", 32), texts).argmax(1)
    student = predict_all(HFClassifier(ctx.out_dir / "model", 32), texts).argmax(1)
    majority = max(np.mean(y == k) for k in (0, 1))
    assert (teacher == y).mean() >= 0.9  # the teacher knows the task
    assert (student == y).mean() >= majority + 0.25  # alpha 1: the student learnt it from the teacher's logits only
    assert _agreement_above_chance(student, teacher) >= 0.25


def test_exactly_one_student_kind():
    from pydantic import ValidationError

    from llmopt.stages.distill import DistillConfig

    with pytest.raises(ValidationError, match="exactly one"):
        DistillConfig(id="d", teacher="t", layers=[0], num_layers=2)
    with pytest.raises(ValidationError, match="exactly one"):
        DistillConfig(id="d", teacher="t")


def test_teacher_logits_are_cached_by_the_teachers_content_not_its_path(tmp_path, tiny_teacher, monkeypatch):
    """The same teacher copied elsewhere reuses the cached logits (nothing computed); a retrained teacher saved
    in the same place does not."""
    import shutil

    import torch

    from llmopt.compression import distillation as D
    from llmopt.models import load_classifier, load_tokenizer, save_model

    texts, cache = ["a fine film", "dull", "ok"], tmp_path / "cache"
    first = D.teacher_logits(tiny_teacher, texts, max_length=16, cache=cache)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_teacher, copy)
    computed = []
    real = D._torch_logits
    monkeypatch.setattr(D, "_onnx_logits", lambda *a, **k: False)
    monkeypatch.setattr(D, "_torch_logits", lambda *a, **k: computed.append(1) or real(*a, **k))
    assert np.array_equal(D.teacher_logits(copy, texts, max_length=16, cache=cache), first) and not computed
    model = load_classifier(copy)
    with torch.no_grad():
        model.classifier.bias += 1.0  # "retrained": the same path, other weights
    save_model(model, load_tokenizer(copy), copy)
    again = D.teacher_logits(copy, texts, max_length=16, cache=cache)
    assert computed == [1] and len(list(cache.glob("teacher_logits-*.npz"))) == 2
    np.testing.assert_allclose(again, first + 1.0, atol=1e-5)


def test_an_overlapping_transfer_set_labels_only_its_new_texts(tmp_path, tiny_teacher, monkeypatch):
    """The cache is per text: a larger set that contains an earlier one sends only the new texts to the teacher,
    in any order, and a legacy whole-list cache file is taken into the store."""
    import hashlib
    import json

    from llmopt.compression import distillation as D

    cache = tmp_path / "cache"
    small, large = ["a fine film", "dull"], ["ok", "dull", "a fine film", "never again", "ok"]
    sent: list[str] = []
    real = D._torch_logits
    monkeypatch.setattr(D, "_onnx_logits", lambda *a, **k: False)
    monkeypatch.setattr(D, "_torch_logits", lambda folder, texts, batches, *a: sent.extend(
        texts[i] for b in batches for i in b) or real(folder, texts, batches, *a))
    first = D.teacher_logits(tiny_teacher, small, max_length=16, cache=cache)
    assert sorted(sent) == sorted(small)
    sent.clear()
    both = D.teacher_logits(tiny_teacher, large, max_length=16, cache=cache)
    assert sorted(sent) == ["never again", "ok", "ok"]  # not the two texts labelled before
    np.testing.assert_array_equal(both[[2, 1]], first)
    np.testing.assert_array_equal(both[0], both[4])
    fresh = D.teacher_logits(tiny_teacher, large, max_length=16)  # no cache: the same figures
    np.testing.assert_allclose(both, fresh, atol=1e-6)

    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    key = hashlib.sha256(json.dumps([D.folder_digest(tiny_teacher), 16, "right", small]).encode()).hexdigest()[:16]
    np.save(legacy_dir / f"teacher_logits-{key}.npy", first + 5.0)  # marked, to see it is the one read
    sent.clear()
    np.testing.assert_array_equal(D.teacher_logits(tiny_teacher, small, max_length=16, cache=legacy_dir), first + 5.0)
    assert not sent and not list(legacy_dir.glob("*.npy")) and list(legacy_dir.glob("teacher_logits-*.npz"))


def test_teacher_logits_in_onnx_runtime_equal_pytorch(tmp_path, tiny_teacher):
    from llmopt.compression.distillation import teacher_logits

    texts = ["a fine film", "dull", "the plot wanders from one cliche to the next , and never comes back", "ok"] * 5
    ort = teacher_logits(tiny_teacher, texts, max_length=16, batch_size=3, runtime="onnx")
    pt = teacher_logits(tiny_teacher, texts, max_length=16, batch_size=3, runtime="torch")
    assert ort.shape == pt.shape == (20, 2) and np.abs(pt).max() > 0
    np.testing.assert_allclose(ort, pt, atol=1e-4)  # each text's row, whatever batch its length put it in
    cached = teacher_logits(tiny_teacher, texts, max_length=16, cache=tmp_path, runtime="onnx")
    assert list(tmp_path.glob("teacher_logits-*.npz")) and np.array_equal(
        teacher_logits(tiny_teacher, texts, max_length=16, cache=tmp_path, runtime="torch"), cached)
