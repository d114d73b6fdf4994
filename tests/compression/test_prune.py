"""Pruning: shapes shrink as claimed and reload; trimmed vocabularies keep logits; sparsity is measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.compression.conftest import make_ctx
from tests.conftest import NEG, POS


def _logits(model, tok, texts):
    import torch

    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**enc).logits.numpy()


def test_structured_prune_stage_shrinks_shapes_and_reloads(tmp_path, tiny_teacher, data_stage):
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    from llmopt.stages.prune import PruneConfig, run

    ctx = make_ctx(tmp_path, "01-prune", {"data": data_stage})
    m = run(PruneConfig(id="prune", model=str(tiny_teacher), keep_layers=1, ffn_keep=0.5, vocab_trim=True,
                        recover=False, train={"max_length": 32}), ctx).metrics
    folder = ctx.out_dir / "model"
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["intermediate_size"]) == (1, 32)
    assert cfg["vocab_size"] == m["vocab_after"] < 30522 // 10
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes["bert.encoder.layer.0.intermediate.dense.weight"] == (32, 32)
    assert shapes["bert.encoder.layer.0.output.dense.weight"] == (32, 32)
    assert shapes["bert.embeddings.word_embeddings.weight"] == (m["vocab_after"], 32)
    assert not any(k.startswith("bert.encoder.layer.1.") for k in shapes)
    assert AutoModelForSequenceClassification.from_pretrained(str(folder)).num_parameters() == m["params_after"]
    assert m["params_after"] < m["params_before"] / 5 and m["weights_bytes_after"] < m["weights_bytes_before"]
    assert len(m["layers_kept"]) == 1 and np.array(m["head_importance"]).shape == (2, 2)


def test_dead_ffn_neuron_is_the_one_removed_and_outputs_do_not_change(tiny_teacher):
    import torch

    from llmopt.compression import structured
    from llmopt.models import load_classifier, load_tokenizer

    model, tok = load_classifier(tiny_teacher).eval(), load_tokenizer(tiny_teacher)
    dead = 7
    with torch.no_grad():  # GELU(0) = 0: neuron 7 of every layer contributes nothing
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[dead] = 0
            layer.intermediate.dense.bias[dead] = 0
    texts = POS + NEG
    before = _logits(model, tok, texts)
    _, ffn = structured.importance(model, tok, texts, [1] * len(POS) + [0] * len(NEG), 32)
    assert all(scores[dead] == 0 and scores.min() == 0 for scores in ffn)
    kept = structured.prune_ffn(model, 63, ffn)
    assert all(dead not in k and len(k) == 63 for k in kept)
    np.testing.assert_allclose(_logits(model, tok, texts), before, atol=1e-5)


def test_saved_pruned_model_reloads_with_same_predictions(tmp_path, tiny_teacher):
    from llmopt.compression import structured
    from llmopt.compression.distillation import student_from_teacher
    from llmopt.models import load_classifier, load_tokenizer, save_model

    model, tok = load_classifier(tiny_teacher).eval(), load_tokenizer(tiny_teacher)
    model = student_from_teacher(model, [1])
    structured.prune_ffn(model, 16, [np.arange(64.0)])
    save_model(model, tok, tmp_path / "m")
    again = load_classifier(tmp_path / "m")
    np.testing.assert_array_equal(_logits(again, load_tokenizer(tmp_path / "m"), POS), _logits(model, tok, POS))


def test_trimmed_vocabulary_gives_identical_logits_on_kept_text(tmp_path, tiny_teacher):
    from llmopt.compression.vocab import trim_vocab
    from llmopt.models import load_classifier, load_tokenizer, save_model

    model, tok = load_classifier(tiny_teacher).eval(), load_tokenizer(tiny_teacher)
    texts = POS + NEG
    before = _logits(model, tok, texts)
    model, small, info = trim_vocab(model, tok, texts, keep_chars="none")
    assert info["vocab_after"] == len(small.get_vocab()) < 120
    save_model(model, small, tmp_path / "m")
    model2, tok2 = load_classifier(tmp_path / "m"), load_tokenizer(tmp_path / "m")
    assert tok2.convert_ids_to_tokens(tok2("a great film")["input_ids"]) == ["[CLS]", "a", "great", "film", "[SEP]"]
    np.testing.assert_array_equal(_logits(model2, tok2, texts), before)
    # a word whose pieces were dropped now maps to [UNK]: the vocabulary really is smaller
    assert tok2.unk_token_id in tok2("zebra")["input_ids"]
    # by default the ASCII characters stay, so the same unseen word splits into pieces instead
    _, with_chars, info2 = trim_vocab(load_classifier(tiny_teacher), tok, texts)
    assert with_chars.unk_token_id not in with_chars("zebra")["input_ids"]
    assert info["vocab_after"] < info2["vocab_after"] < info["vocab_after"] + 2 * 128


def test_cubic_schedule_and_global_magnitude_masks():
    import torch

    from llmopt.compression.sparsity import cubic_sparsity, global_masks

    assert cubic_sparsity(5, 0, 10, 0.8) == pytest.approx(0.7)  # 0.8 - 0.8 * 0.5^3
    assert cubic_sparsity(0, 0, 10, 0.8) == 0 and cubic_sparsity(12, 0, 10, 0.8) == 0.8
    a, b = torch.tensor([1.0, -5.0, 3.0]), torch.tensor([[0.5, 4.0], [-2.0, 6.0]])
    ma, mb = global_masks([a, b], 3 / 7)  # the 3 smallest |w| overall: 0.5, 1, 2
    assert ma.tolist() == [False, True, True] and mb.tolist() == [[False, True], [False, True]]


def test_unstructured_prune_reaches_target_sparsity_and_says_file_is_not_smaller(tmp_path, tiny_teacher, data_stage):
    from llmopt.stages.prune import PruneConfig, run

    ctx = make_ctx(tmp_path, "01-prune", {"data": data_stage})
    m = run(PruneConfig(id="prune", model=str(tiny_teacher), teacher=str(tiny_teacher), sparsity=0.6,
                        sparsity_every=2, train=dict(max_steps=8, batch_size=8, max_length=32, logging_steps=2)), ctx).metrics
    assert m["measured_sparsity"] == pytest.approx(0.6, abs=0.01)
    assert [t for _, t in m["sparsity_schedule"]][-1] == pytest.approx(0.6)
    assert m["weights_bytes_after"] >= 0.99 * m["weights_bytes_before"]
    assert m["compressed_bytes_after"] < m["weights_bytes_after"] and "dense" in m["sparsity_note"]
