"""extend: new domain tokens with mean-of-pieces rows; old ids and outputs on old-token text unchanged."""

import json
import shutil

import pytest
import torch

from llmopt.errors import ModelError
from llmopt.models import load_tokenizer
from llmopt.tokenization.extend import candidate_words, extend_vocabulary, load_for_extend

DOMAIN = ["the cinemaphotonics and the scriptwrightery were superb"] * 3 + ["a scriptwrightery of cinemaphotonics"] * 2
OLD_TEXT = ["the film is good and the acting is fine .", "a bad movie"]


def _logits(model, tok, texts):
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits for t in texts]


def _check(model_dir, untied=False):
    model, tok = load_for_extend(model_dir)
    before_ids = [tok(t)["input_ids"] for t in OLD_TEXT]
    before = _logits(model, tok, OLD_TEXT)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone() if untied else None
    pieces = {r["word"]: r["pieces"] for r in candidate_words(tok, DOMAIN, 5)}
    info = extend_vocabulary(model, tok, DOMAIN, n=2)
    words = [r["word"] for r in info["tokens"]]
    assert info["added"] == 2 and set(words) == {"cinemaphotonics", "scriptwrightery"}
    assert all(len(pieces[w]) >= 2 for w in words)
    # old ids and outputs on old-token text unchanged (a causal LM's new logits columns aside)
    assert [tok(t)["input_ids"] for t in OLD_TEXT] == before_ids
    for a, b in zip(before, _logits(model, tok, OLD_TEXT)):
        assert torch.equal(a, b[..., : a.shape[-1]])
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[: emb0.shape[0]], emb0)
    for r in info["tokens"]:  # the domain word is now one token, its row the mean of its old pieces' rows
        ids = tok.convert_tokens_to_ids(pieces[r["word"]])
        assert torch.allclose(emb[r["id"]], emb0[ids].mean(0))
        assert r["id"] in tok("the " + r["word"] + " was fine")["input_ids"]
        if untied:
            assert torch.allclose(model.get_output_embeddings().weight[r["id"]], head0[ids].mean(0))
    return model, tok, info


def test_extend_tiny_bert(tiny_bert):
    model, tok, info = _check(tiny_bert)
    assert info["new_vocab"] == info["old_vocab"] + 2 == model.config.vocab_size


def test_extend_tiny_llama_tied(tiny_llama):
    model, tok, info = _check(tiny_llama)
    assert info["tied_head"] and model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    text = "a scriptwrightery"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_extend_untied_llama_head(tmp_path, tiny_llama):
    from transformers import AutoConfig, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(str(tiny_llama))
    cfg.tie_word_embeddings = False
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).save_pretrained(str(tmp_path / "untied"))
    load_tokenizer(tiny_llama).save_pretrained(str(tmp_path / "untied"))
    _, _, info = _check(tmp_path / "untied", untied=True)
    assert not info["tied_head"]


def test_tokenizer_larger_than_embedding_and_exports_are_refused(tmp_path, tiny_bert):
    small = tmp_path / "small"
    shutil.copytree(tiny_bert, small)
    cfg = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1000}))
    with pytest.raises(ModelError, match=r"base: the tokenizer in .* has 30,522 tokens but the model's embedding "
                                         r"has 1,000 rows"):
        load_for_extend(small)
    onnx = tmp_path / "onnx"
    shutil.copytree(tiny_bert, onnx)
    (onnx / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelError, match="base: .* no input embeddings"):
        load_for_extend(onnx)


@pytest.mark.slow
def test_extend_real_smollm2_keeps_old_outputs():
    from llmopt.llm import smollm2_path

    model, tok = load_for_extend(smollm2_path())
    before = _logits(model, tok, OLD_TEXT)
    info = extend_vocabulary(model, tok, DOMAIN, n=2)
    assert info["added"] == 2 and info["tied_head"]
    for a, b in zip(before, _logits(model, tok, OLD_TEXT)):
        assert torch.equal(a, b[..., : a.shape[-1]])
    ids = tok("a scriptwrightery of cinemaphotonics", return_tensors="pt")["input_ids"]
    assert {r["id"] for r in info["tokens"]} <= set(ids[0].tolist())
    with torch.no_grad():  # the new rows predict like their pieces: a finite, sane next-token distribution
        assert torch.isfinite(model(input_ids=ids).logits).all()
