"""Texts → token ids with an explicit truncation policy, and the length statistics behind `max_length: auto`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

AUTO_PERCENTILE = 95


def token_lengths(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Length in tokens (special tokens included) of every text, untruncated."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    enc = tokenizer(texts, truncation=False, add_special_tokens=True, verbose=False)
    return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)


def model_limit(tokenizer: Any, model_config: Any = None) -> int:
    """The most tokens the model takes: its position embeddings (or the tokenizer's own limit)."""
    limits = [getattr(model_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(v) for v in limits if isinstance(v, (int, float)) and 8 <= v < 1_000_000]
    return min(limits) if limits else 512


def resolve_max_length(setting: int | str, lengths: np.ndarray, limit: int) -> int:
    """`auto`: the 95th percentile of the train lengths rounded up to a multiple of 8, within the model's limit."""
    if setting != "auto":
        return min(int(setting), limit)
    if len(lengths) == 0:
        return min(128, limit)
    p = float(np.percentile(lengths, AUTO_PERCENTILE))
    return int(min(limit, max(8, 8 * math.ceil(p / 8))))


def coverage(lengths: np.ndarray, max_length: int) -> dict[str, float | int]:
    """How much of each text `max_length` keeps: share of texts kept whole, mean share of tokens kept."""
    if len(lengths) == 0:
        return {"max_length": max_length, "rows": 0}
    kept = np.minimum(lengths, max_length) / np.maximum(lengths, 1)
    return {
        "max_length": int(max_length),
        "rows": int(len(lengths)),
        "share_rows_cut": float(np.mean(lengths > max_length)),
        "mean_share_tokens_kept": float(kept.mean()),
        "median_share_tokens_kept": float(np.median(kept)),
        "length_p50": float(np.percentile(lengths, 50)),
        "length_p95": float(np.percentile(lengths, 95)),
        "length_max": int(lengths.max()),
    }


def encode(tokenizer: Any, texts: list[str], max_length: int, truncation: str = "right") -> dict[str, list]:
    """Token features for `texts`. head_tail keeps the first quarter and the last three quarters of the budget
    (Sun et al. 2019: the end of a long review or message often carries its verdict); special tokens stay."""
    if truncation == "right":
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    full = tokenizer(texts, truncation=False, verbose=False)
    head = max(1, max_length // 4)
    tail = max_length - head
    out: dict[str, list] = {k: [] for k in full}
    for i in range(len(texts)):
        for k in full:
            seq = full[k][i]
            out[k].append(seq if len(seq) <= max_length else seq[:head] + seq[len(seq) - tail:])
    return out
