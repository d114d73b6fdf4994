"""Causal-LM evaluation: perplexity by hand, sliding windows, bootstrap interval, generation speed, label scoring."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from llmopt.eval.causal import DEQUANTIZED_GGUF, HFRunner, gguf_file_of, is_causal_path, load_causal_runner
from llmopt.data.sft import parse_label as parse_answer
from llmopt.eval.generation import PROMPTS, build_prompt, classify, measure_generation, read_prompts
from llmopt.eval.perplexity import perplexity, read_texts, token_stream, windows

TEXT = ("The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
        "All that glitters is not gold, and not all those who wander are lost. ") * 3


@pytest.fixture(scope="module")
def runner(tiny_llama: Path) -> HFRunner:
    return load_causal_runner(tiny_llama, threads=1)


class IdRunner:
    """A stub whose NLL for a token is the token's id: the mean NLL is then the mean of the ids scored."""

    def nll(self, ids: list[int]) -> np.ndarray:
        return np.asarray(ids[1:], dtype=float)


def test_perplexity_equals_exp_mean_nll_by_hand(runner: HFRunner) -> None:
    import torch

    ids = token_stream(runner.tokenizer, [TEXT])[:48]
    with torch.inference_mode():
        whole = runner.model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()  # mean over 47 tokens
        # two non-overlapping windows of 24: each window's first token is context only
        sums = [runner.model(torch.tensor([ids[b:b + 24]]), labels=torch.tensor([ids[b:b + 24]])).loss.item() * 23
                for b in (0, 24)]
    one = perplexity(runner, ids, window=48, stride=48)
    assert one["tokens_scored"] == 47
    assert one["ppl"] == pytest.approx(math.exp(whole), rel=1e-5)
    two = perplexity(runner, ids, window=24, stride=24)
    assert two["tokens_scored"] == 46 and two["windows"] == 2
    assert two["ppl"] == pytest.approx(math.exp(sum(sums) / 46), rel=1e-5)


@pytest.mark.parametrize("n,window,stride", [(100, 16, 4), (100, 16, 16), (37, 10, 7), (5, 512, 512)])
def test_each_token_scored_once(n: int, window: int, stride: int) -> None:
    seen = []
    for begin, end, scored in windows(n, window, stride):
        assert end - begin <= window and scored <= end - begin - 1
        seen.extend(range(end - scored, end))
    if stride < window:
        assert seen == list(range(1, n))  # every token but the first, once, in order
    else:
        assert len(seen) == len(set(seen))
        assert set(range(1, n)) - set(seen) == set(range(window, n, window))  # window starts are context only
    ids = list(range(n))
    res = perplexity(IdRunner(), ids, window=window, stride=stride)
    assert res["mean_nll"] == pytest.approx(np.mean(seen))
    assert res["tokens_scored"] == len(seen)


def test_stride_below_window_gives_more_context_same_tokens(runner: HFRunner) -> None:
    ids = token_stream(runner.tokenizer, [TEXT])[:96]
    a = perplexity(runner, ids, window=32, stride=8)
    assert a["tokens_scored"] == 95
    assert a["ppl"] != perplexity(runner, ids, window=32, stride=32)["ppl"]


def test_bootstrap_interval_contains_point_and_is_seeded(runner: HFRunner) -> None:
    ids = token_stream(runner.tokenizer, [TEXT])[:160]
    res = perplexity(runner, ids, window=16, stride=16, resamples=1000, seed=1)
    lo, hi = res["ppl_ci"]
    assert lo < res["ppl"] < hi
    assert perplexity(runner, ids, window=16, stride=16, resamples=1000, seed=1)["ppl_ci"] == [lo, hi]


def test_generation_speed_separates_prefill_and_decode(runner: HFRunner) -> None:
    pre, dec, new = runner.generate_timed(runner.tokenizer("Hello there, how are you")["input_ids"], 12)
    assert len(new) == 12 and pre > 0 and dec > 0
    res = measure_generation(runner, PROMPTS[:3], max_new_tokens=8, warmup=1)
    assert res["prefill_tok_s"] > 0 and res["decode_tok_s"] > 0 and res["prompts"] == 3
    assert all(r["prefill_s"] > 0 and r["decode_s"] > 0 for r in res["runs"])


def test_measure_generation_arithmetic() -> None:
    class Slow:
        tokenizer = None
        runtime = "stub"

        def generate_timed(self, ids, n):
            time.sleep(0.001)
            return 0.5, 2.0, [0] * n

    import llmopt.eval.generation as g

    orig = g.chat_ids
    g.chat_ids = lambda tok, text: [1] * 10
    try:
        res = measure_generation(Slow(), ["a", "b"], max_new_tokens=9, warmup=0)
    finally:
        g.chat_ids = orig
    assert res["prefill_tok_s"] == pytest.approx(20.0)  # 10 prompt tokens in 0.5 s
    assert res["decode_tok_s"] == pytest.approx(4.0)  # 8 tokens after the first in 2 s


def test_batched_label_scores_match_one_by_one(runner: HFRunner) -> None:
    tok = runner.tokenizer
    prompt = tok("Review: a fine film. Sentiment:")["input_ids"]
    conts = [tok(w, add_special_tokens=False)["input_ids"] for w in (" positive", " negative", " not sure at all")]
    batched = runner.continuation_logprobs(prompt, conts)
    single = [-float(runner.nll(prompt + c)[len(prompt) - 1:].sum()) for c in conts]
    assert batched == pytest.approx(single, abs=1e-4)


def test_classify_loglik_and_generate_count_unparseable(runner: HFRunner) -> None:
    ins = {"template": "Is this review {labels}? {text}", "label_words": {"neg": "negative", "pos": "positive"}}
    out = classify(runner, ["great", "awful", "fine"], ["neg", "pos"], ins, "loglik")
    assert len(out["preds"]) == 3 and set(out["preds"]) <= {0, 1}
    gen = classify(runner, ["great", "awful"], ["neg", "pos"], ins, "generate", max_new_tokens=4)
    assert len(gen["preds"]) == 2 and gen["unparseable"] == sum(p < 0 for p in gen["preds"])


def test_prompt_and_parse() -> None:
    words = {"neg": "negative", "pos": "positive"}
    assert build_prompt({"template": "{labels}: {text}"}, "x", words) == "negative, positive: x"
    assert parse_answer(" Positive.", words) == "pos"
    assert parse_answer("I think it is negative overall", words) == "neg"
    assert parse_answer("positive or negative", words) == "pos"
    assert parse_answer("no idea", words) is None
    from llmopt.errors import DataError

    with pytest.raises(DataError, match="unknown field"):
        build_prompt({"template": "{text} {lable}"}, "x", words)


def test_corpus_and_prompt_files(tmp_path: Path) -> None:
    from llmopt.errors import DataError

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert read_texts(tmp_path / "a.jsonl") == ["one", "two"]
    (tmp_path / "b.jsonl").write_text('{"txt": "one"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:1: .*'text'"):
        read_texts(tmp_path / "b.jsonl")
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert read_prompts(tmp_path / "p.txt") == ["first", "second"]
    assert len(PROMPTS) >= 20


def test_gguf_detection_and_bad_gguf(tmp_path: Path, tiny_llama: Path) -> None:
    from llmopt.errors import ModelError

    assert is_causal_path(tiny_llama) and gguf_file_of(tiny_llama) is None
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    assert gguf_file_of(bad) == bad
    with pytest.raises(ModelError, match="not a GGUF"):
        load_causal_runner(bad, threads=1)


@pytest.mark.slow
def test_shipped_gguf_file_runs(tmp_path: Path) -> None:
    """The shipped Q4_1 file as a bare path: llama.cpp when installed, else dequantized in transformers."""
    from llmopt.llm import smollm2_gguf

    r = load_causal_runner(smollm2_gguf(), threads=2)
    try:
        import llama_cpp  # noqa: F401

        assert r.runtime == "llama.cpp"
    except ImportError:
        assert r.runtime == DEQUANTIZED_GGUF
    ids = token_stream(r.tokenizer, [TEXT])[:128]
    assert 1 < perplexity(r, ids, window=128, stride=128)["ppl"] < 100
