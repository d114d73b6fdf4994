"""Perplexity of a causal LM over a token stream: sliding windows with a stride, token-weighted, with a 95%
bootstrap interval over windows.

As in the Hugging Face perplexity guide: windows of `window` tokens start every `stride` tokens; each window
scores only the tokens no earlier window scored (with stride < window the rest is context). The first token of
the stream has no context and is never scored; with stride == window each window's first token is context only.
ppl = exp(sum of NLLs / tokens scored).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.errors import DataError


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window over n tokens: tokens [end - scored, end) are scored in window [begin, end)."""
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be between 1 and window ({window}), got {stride}")
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        scored = min(end - prev_end, end - begin - 1)  # a window's first token has no context inside it
        if scored > 0:
            out.append((begin, end, scored))
        prev_end = end
        if end == n:
            break
    return out


def perplexity(runner: Any, ids: list[int], window: int = 512, stride: int = 512, resamples: int = 1000,
               seed: int = 0) -> dict[str, Any]:
    """Token-weighted perplexity of `ids` with a percentile-bootstrap 95% interval resampling windows."""
    if len(ids) < 2:
        raise DataError(f"perplexity needs at least 2 tokens, got {len(ids)}; give a longer text.")
    sums, counts = [], []
    for begin, end, scored in windows(len(ids), window, stride):
        nll = runner.nll(ids[begin:end])
        sums.append(float(np.sum(nll[-scored:])))
        counts.append(scored)
    s, c = np.asarray(sums), np.asarray(counts, dtype=float)
    mean = float(s.sum() / c.sum())
    idx = np.random.default_rng(seed).integers(0, len(s), size=(resamples, len(s)))
    boot = np.exp(s[idx].sum(axis=1) / c[idx].sum(axis=1))
    return {"ppl": math.exp(mean), "mean_nll": mean, "ppl_ci": [float(np.percentile(boot, 2.5)),
                                                                 float(np.percentile(boot, 97.5))],
            "tokens_scored": int(c.sum()), "tokens": len(ids), "windows": len(s), "window": window, "stride": stride,
            "ci_over": "windows", "bootstrap_resamples": resamples}


def read_texts(path: Path) -> list[str]:
    """Documents of a perplexity corpus: a .txt file is one document; a .jsonl file has one `text` per row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: perplexity text file not found.")
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{i}: each row needs a string field 'text'.")
            texts.append(row["text"])
        if not texts:
            raise DataError(f"{path}: no rows with 'text'.")
        return texts
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path}: the perplexity text file is empty.")
    return [text]


def token_stream(tokenizer: Any, texts: list[str], max_tokens: int | None = None) -> list[int]:
    """The documents joined by blank lines and tokenized once (the tokenizer's own special tokens), cut to
    max_tokens."""
    ids = tokenizer("\n\n".join(texts))["input_ids"]
    return list(ids[:max_tokens] if max_tokens else ids)
