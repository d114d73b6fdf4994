"""How well a tokenizer fits held-out text: fertility, split share, unknown rate, vocabulary use, worst words.

A word is a whitespace-separated run of characters; each token counts toward the word its first non-space
character falls in (from the fast tokenizer's offsets), so every tokenizer family is measured the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

WORD = re.compile(r"\S+")
LETTERS = re.compile(r"[^\W\d_]+")  # the words worth a token of their own: runs of letters


def pieces_per_word(tok: Any, texts: list[str], batch: int = 512) -> tuple[list[int], int, int, set[int]]:
    """(pieces of every word in order, tokens in all, unknown tokens, distinct ids used); no special tokens."""
    pieces: list[int] = []
    n_tokens = n_unk = 0
    used: set[int] = set()
    unk = tok.unk_token_id
    for i in range(0, len(texts), batch):
        chunk = texts[i:i + batch]
        enc = tok(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"]):
            spans = [m.span() for m in WORD.finditer(text)]
            owner = [-1] * len(text)
            for w, (s, e) in enumerate(spans):
                owner[s:e] = [w] * (e - s)
            counts = [0] * len(spans)
            for tid, (s, e) in zip(ids, offsets):
                w = next((owner[p] for p in range(s, min(e, len(text))) if owner[p] >= 0), -1)
                if w >= 0:
                    counts[w] += 1
            pieces += counts
            n_tokens += len(ids)
            n_unk += sum(t == unk for t in ids) if unk is not None else 0
            used.update(ids)
    return pieces, n_tokens, n_unk, used


def quality(tok: Any, texts: list[str]) -> dict[str, Any]:
    """Fertility (tokens per word), share of words in ≥2 pieces, unknown-token rate, vocabulary utilization."""
    pieces, n_tokens, n_unk, used = pieces_per_word(tok, texts)
    words = max(len(pieces), 1)
    return {
        "words": len(pieces),
        "tokens": n_tokens,
        "fertility": n_tokens / words,
        "split_share": sum(p >= 2 for p in pieces) / words,
        "unk_rate": n_unk / max(n_tokens, 1),
        "vocab_size": len(tok),
        "vocab_used": len(used),
        "vocab_utilization": len(used) / max(len(tok), 1),
    }


def word_pieces(tok: Any, words: list[str]) -> list[list[str]]:
    """Each word's tokens as it appears mid-sentence (after "a "), so a leading-space marker (Ġ, ▁) is counted."""
    if not words:
        return []
    base = len(tok("a", add_special_tokens=False)["input_ids"])
    enc = tok(["a " + w for w in words], add_special_tokens=False)["input_ids"]
    return [tok.convert_ids_to_tokens(ids[base:]) for ids in enc]


def worst_split_words(tok: Any, texts: list[str], k: int = 20, min_count: int = 2) -> list[dict[str, Any]]:
    """The domain words (runs of letters seen ≥ min_count times) this tokenizer cuts into the most pieces (≥ 2),
    most frequent first among equals."""
    counts = Counter(w for t in texts for w in LETTERS.findall(t))
    words = [w for w, c in counts.items() if c >= min_count]
    rows = [{"word": w, "count": counts[w], "pieces": len(p), "tokens": p}
            for w, p in zip(words, word_pieces(tok, words)) if len(p) >= 2]
    rows.sort(key=lambda r: (-r["pieces"], -r["count"], r["word"]))
    return rows[:k]
