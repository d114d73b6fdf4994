"""Texts → token ids with an explicit truncation policy, and the length statistics behind `max_length: auto`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

AUTO_PERCENTILE = 95


def token_lengths(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Length in tokens (special tokens included) of every text, untruncated."""
    out = np.zeros(len(texts), dtype=np.int64)
    for s in range(0, len(texts), 1024):  # in chunks: the ids of a large corpus of long texts need not fit at once
        enc = tokenizer(texts[s : s + 1024], truncation=False, add_special_tokens=True, verbose=False)
        out[s : s + 1024] = [len(ids) for ids in enc["input_ids"]]
    return out


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


def max_length_for(setting: int | str, tokenizer: Any, texts: list[str], model_config: Any = None) -> int:
    """The token budget a setting means for these texts (they are tokenized only for `auto`)."""
    lengths = token_lengths(tokenizer, texts) if setting == "auto" else None
    return resolve_max_length(setting, lengths, model_limit(tokenizer, model_config))


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


MOST_CUT = 0.5  # above this share of cut train texts, the console and the report warn
LENGTH_THRESHOLDS = (64, 128, 256, 512)


def length_distribution(lengths: np.ndarray, thresholds: tuple[int, ...] = LENGTH_THRESHOLDS) -> dict[str, Any]:
    """Percentiles (p50/p90/p95/p99), mean and max of `lengths`, and the share of rows over each threshold."""
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        return {"rows": 0}
    return {
        "rows": int(len(lengths)),
        **{f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 95, 99)},
        "mean": float(lengths.mean()),
        "max": int(lengths.max()),
        **({"share_over": {str(t): float(np.mean(lengths > t)) for t in thresholds}} if thresholds else {}),
    }


def cut_warning(cov: dict[str, Any], setting: int | str, truncation: str) -> str | None:
    """One line for the console when most train texts are longer than max_length; None when most fit."""
    if not cov.get("rows") or cov["share_rows_cut"] <= MOST_CUT:
        return None
    # auto already stops at the 95th percentile or the model's limit: a larger number would not fit
    fixes = (["a larger max_length", "max_length: auto"] if setting != "auto" else []) + (
        ["truncation: head_tail"] if truncation != "head_tail" else [])
    return (f"warning: max_length {cov['max_length']} ({truncation} truncation) cuts "
            f"{100 * cov['share_rows_cut']:.0f}% of the train texts, which keep "
            f"{100 * cov['mean_share_tokens_kept']:.0f}% of their tokens on average"
            + (f"; consider {' or '.join(fixes)}" if fixes else "") + ".")


def encode(tokenizer: Any, texts: list[str], max_length: int, truncation: str = "right") -> dict[str, list]:
    """Token features for `texts`. head_tail keeps the first quarter and the last three quarters of the budget
    (Sun et al. 2019: the end of a long review or message often carries its verdict); special tokens stay."""
    if truncation == "right":
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    full = tokenizer(texts, truncation=False, verbose=False)
    return {k: [head_tail(seq, max_length) for seq in full[k]] for k in full}


def head_tail(seq: list, max_length: int) -> list:
    """The first quarter and the last three quarters of `max_length` from a sequence longer than it."""
    if len(seq) <= max_length:
        return seq
    head = max(1, max_length // 4)
    return seq[:head] + seq[len(seq) - (max_length - head):]
