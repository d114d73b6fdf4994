"""The causal-LM loader: the bundled SmolLM2 converted once into the cache, tokenizer checks, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmopt.errors import ModelError


def test_tiny_llama_loads_with_checked_chat_tokenizer(tiny_llama: Path) -> None:
    from llmopt.llm import is_causal_lm, load_causal_lm, load_chat_tokenizer, smollm2_expectations

    assert is_causal_lm(tiny_llama)
    tok = load_chat_tokenizer(tiny_llama, need_chat_template=True)
    smollm2_expectations(tok)  # the GGUF's own tokenizer: ChatML, BOS <|im_start|>, EOS <|im_end|>
    model = load_causal_lm(tiny_llama)
    assert model.config.vocab_size == len(tok) and not model.training


def test_not_a_gguf_is_one_clear_error(tmp_path: Path) -> None:
    from llmopt.llm import convert_gguf

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF file"):
        convert_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_and_broken_chat_template(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    from llmopt.llm import check_chat_template, load_chat_tokenizer

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_llama / "config.json", bare / "config.json")
    with pytest.raises(ModelError, match="no tokenizer files"):
        load_chat_tokenizer(bare)
    tok = load_chat_tokenizer(tiny_llama)
    tok.chat_template = "{{ messages[0]['content'] | nosuchfilter }}"
    with pytest.raises(ModelError, match="failed to render"):
        check_chat_template(tok, tiny_llama)


@pytest.mark.slow
def test_bundled_smollm2_is_converted_once_atomically_and_reused(tmp_path: Path, monkeypatch) -> None:
    import torch

    from llmopt.llm import load_causal_lm, load_chat_tokenizer, smollm2_path

    monkeypatch.setenv("LLMOPT_CACHE", str(tmp_path / "cache"))
    path = smollm2_path()
    assert (path / "model.safetensors").is_file() and (path / "chat_template.jinja").is_file()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temp folder left beside it
    mtime = os.stat(path / "model.safetensors").st_mtime_ns
    assert smollm2_path() == path and os.stat(path / "model.safetensors").st_mtime_ns == mtime  # reused
    tok = load_chat_tokenizer(path, need_chat_template=True)
    model = load_causal_lm(path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0])
