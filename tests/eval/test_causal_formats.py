"""The causal evaluator on the quantize stage's output folders (GGUF and torchao) and on an SFT model's instruction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from llmopt.eval.causal import DEQUANTIZED_GGUF, load_causal_runner
from llmopt.eval.generation import classify
from llmopt.eval.perplexity import perplexity, token_stream

TEXT = "A small tiny model reads a short text about birds, trees, rivers and the sea, again and again. " * 4


@pytest.fixture(scope="module")
def gguf_q8(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmopt.compression.causal_quantize import build_gguf_folder

    out = tmp_path_factory.mktemp("q8") / "model"
    build_gguf_folder(tiny_llama, out, "Q8_0", "tiny", None)
    return out


def _ppl(runner, ids):
    return perplexity(runner, ids, window=32, stride=32)["ppl"]


def test_gguf_folder_dequantized_without_llama_cpp(gguf_q8: Path, tiny_llama: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp → ImportError
    r = load_causal_runner(gguf_q8, threads=1)
    assert r.runtime == DEQUANTIZED_GGUF
    ref = load_causal_runner(tiny_llama, threads=1)
    ids = token_stream(ref.tokenizer, [TEXT])[:96]
    assert token_stream(r.tokenizer, [TEXT])[:96] == ids  # the folder's own tokenizer
    assert _ppl(r, ids) == pytest.approx(_ppl(ref, ids), rel=0.01)  # Q8_0: close to the fp32 source


def test_gguf_folder_in_llama_cpp(gguf_q8: Path, tiny_llama: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional; `make llamacpp`)")
    r = load_causal_runner(gguf_q8, threads=1)
    try:
        assert r.runtime == "llama.cpp"
        ref = load_causal_runner(tiny_llama, threads=1)
        ids = token_stream(ref.tokenizer, [TEXT])[:96]
        assert _ppl(r, ids) == pytest.approx(_ppl(ref, ids), rel=0.02)
        _, _, new = r.generate_timed(ids[:20], 5)
        assert len(new) == 5
    finally:
        r.close()


def test_torchao_int8_folder(tiny_llama: Path, tmp_path: Path) -> None:
    from llmopt.compression.torchao_quant import quantize_torchao

    out = tmp_path / "int8"
    quantize_torchao(tiny_llama, out, "torchao_int8", "tiny")
    r = load_causal_runner(out, threads=1)
    assert r.runtime.startswith("transformers torchao int8")
    ref = load_causal_runner(tiny_llama, threads=1)
    ids = token_stream(ref.tokenizer, [TEXT])[:64]
    assert _ppl(r, ids) == pytest.approx(_ppl(ref, ids), rel=0.02)
    assert len(r.generate_timed(ids[:10], 4)[2]) == 4


class KeywordRunner:
    """Scores a label's answer highest when its word appears in the prompt: classify must map that to the label."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def continuation_logprobs(self, prompt_ids, conts):
        prompt = self.tokenizer.decode(prompt_ids)
        return [0.0 if self.tokenizer.decode(c[:-1]).strip() in prompt else -5.0 for c in conts]


def test_classify_maps_scores_to_labels(tiny_llama: Path) -> None:
    from llmopt.llm import load_chat_tokenizer

    r = KeywordRunner(load_chat_tokenizer(tiny_llama))
    ins = {"template": "Review: {text}", "label_words": {"neg": "awful", "pos": "lovely"}}
    texts = ["a lovely day", "an awful night", "lovely", "truly awful acting"]
    out = classify(r, texts, ["neg", "pos"], ins, "loglik")
    assert out["preds"] == [1, 0, 1, 0]


def test_instruction_from_model_folder_is_used(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    from llmopt.eval.causal_eval import evaluate_causal_model

    folder = tmp_path / "sft"
    shutil.copytree(tiny_llama, folder)
    (folder / "llmopt_instruction.json").write_text(
        '{"template": "Say {labels}: {text}", "label_words": {"a": "yes", "b": "no"}}')
    e = evaluate_causal_model(folder, threads=1, ppl_texts=[TEXT], window=32, stride=32, max_ppl_tokens=64,
                              prompts=["Hi"], max_new_tokens=3, warmup=0, resamples=1000, seed=0,
                              classify_rows=(["x", "y", "z"], [0, 1, 0], ["a", "b"]))
    c = e["classification"]
    assert c["instruction_from"] == "model folder" and c["label_words"] == {"a": "yes", "b": "no"} and c["n"] == 3
    assert np.isclose(c["accuracy"], np.mean(np.diag(np.asarray(c["confusion_matrix"]))[:2].sum() / 3))


def test_runtime_file_static_cache_is_honoured(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "rt"
    shutil.copytree(tiny_llama, folder)
    (folder / "llmopt_runtime.json").write_text('{"compile": false, "static_cache": true}')
    r = load_causal_runner(folder, threads=1)
    assert r.runtime == "transformers fp32 eager + static cache" and r.static_cache
    ids = r.tokenizer("a short prompt")["input_ids"]
    eager = load_causal_runner(tiny_llama, threads=1)
    assert r.generate_timed(ids, 5)[2] == eager.generate_timed(ids, 5)[2]  # same greedy tokens either way


def test_compiled_decode_step_gives_the_same_tokens_for_prompts_of_any_length(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "compiled"
    shutil.copytree(tiny_llama, folder)
    (folder / "llmopt_runtime.json").write_text('{"compile": true, "static_cache": true}')
    r = load_causal_runner(folder, threads=1, n_ctx=64)
    assert r.runtime == "transformers fp32 + torch.compile (decode step) + static cache"
    assert r.model.generation_config.max_cache_len == 64  # one cache size: one decode graph for every prompt
    eager = load_causal_runner(tiny_llama, threads=1)
    for text in ("a short prompt", "a much longer prompt with quite a few more words in it"):
        ids = r.tokenizer(text)["input_ids"]
        assert r.generate_timed(ids, 6)[2] == eager.generate_timed(ids, 6)[2]
