"""Truncation policy and length statistics, against values a person can work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from llmopt.training.tokenize import (
    coverage, cut_warning, encode, head_tail, length_distribution, model_limit, resolve_max_length, token_lengths,
)


def test_auto_is_the_95th_percentile_rounded_up_to_8_within_the_limit():
    lengths = np.arange(1, 101)  # p95 = 95.05 → 96
    assert resolve_max_length("auto", lengths, limit=512) == 96
    assert resolve_max_length("auto", lengths, limit=64) == 64
    assert resolve_max_length("auto", np.array([3, 3, 3]), limit=512) == 8  # never below 8
    assert resolve_max_length("auto", np.zeros(0, dtype=int), limit=512) == 128
    assert resolve_max_length(256, lengths, limit=128) == 128  # a fixed setting is capped by the model too
    assert resolve_max_length(32, lengths, limit=128) == 32


def test_auto_on_a_real_tokenizer_and_the_tiny_models_limit(tiny_bert):
    from llmopt.models import load_classifier, load_tokenizer

    tok = load_tokenizer(tiny_bert)
    limit = model_limit(tok, load_classifier(tiny_bert).config)
    assert limit == 128  # max_position_embeddings=128 is tighter than the tokenizer's 512
    # "word" is one token: n words → n + 2 tokens ([CLS] … [SEP])
    short = ["word " * n for n in range(1, 41)]  # 3..42 tokens; p95 = 40.05 → 48
    assert list(token_lengths(tok, short)) == list(range(3, 43))
    assert resolve_max_length("auto", token_lengths(tok, short), limit) == 48
    long = ["word " * 300] * 5
    assert resolve_max_length("auto", token_lengths(tok, long), limit) == 128
    many = [f"word {'x ' * (i % 7)}" for i in range(1100)]  # more than one 1024-text chunk
    assert list(token_lengths(tok, many)) == [len(tok(t)["input_ids"]) for t in many]


def test_coverage_by_hand():
    cov = coverage(np.array([10, 20, 40, 80]), 20)
    # kept shares 1, 1, 1/2, 1/4
    assert cov["share_rows_cut"] == 0.5
    assert cov["mean_share_tokens_kept"] == pytest.approx(0.6875)
    assert cov["median_share_tokens_kept"] == pytest.approx(0.75)
    assert (cov["rows"], cov["max_length"], cov["length_max"], cov["length_p50"]) == (4, 20, 80, 30.0)
    assert coverage(np.zeros(0, dtype=int), 64) == {"max_length": 64, "rows": 0}


def test_cut_warning_only_when_most_texts_are_cut():
    assert cut_warning(coverage(np.array([10, 20, 40, 80]), 20), 20, "right") is None  # half cut: not most
    most = coverage(np.array([10, 40, 80]), 20)
    line = cut_warning(most, 20, "right")
    assert "67% of the train texts" in line and "head_tail" in line and "max_length: auto" in line
    assert "truncation: head_tail" not in cut_warning(most, 20, "head_tail")
    assert cut_warning(most, "auto", "head_tail").endswith("of their tokens on average.")  # nothing left to suggest


def test_head_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end():
    assert head_tail(list(range(10)), 8) == [0, 1, 4, 5, 6, 7, 8, 9]
    assert head_tail(list(range(5)), 8) == [0, 1, 2, 3, 4]


def test_head_tail_encoding_keeps_the_special_tokens_and_the_last_words(minilm_path):
    from llmopt.models import load_tokenizer

    tok = load_tokenizer(minilm_path)
    text = "filler " * 100 + "verdict: great"
    ids = encode(tok, [text, "short one"], 16, "head_tail")["input_ids"]
    assert len(ids[0]) == 16 and ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id
    assert tok.decode(ids[0][-4:-1]) == "verdict : great"
    assert ids[1] == tok("short one")["input_ids"]  # short texts untouched
    right = encode(tok, [text], 16, "right")["input_ids"][0]
    assert "great" not in tok.decode(right)


def test_length_distribution_by_hand():
    d = length_distribution(np.arange(1, 101))
    assert [d[k] for k in ("p50", "p90", "p95", "p99")] == pytest.approx([50.5, 90.1, 95.05, 99.01])
    assert (d["max"], d["rows"], d["mean"]) == (100, 100, 50.5)
    assert d["share_over"] == {"64": 0.36, "128": 0.0, "256": 0.0, "512": 0.0}
    assert "share_over" not in length_distribution(np.arange(1, 5), thresholds=())
