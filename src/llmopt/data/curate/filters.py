"""Row filters in the datatrove style: each returns True (keep) or (False, reason); `first_failure` runs them."""

from __future__ import annotations

import re
from collections.abc import Callable

from llmopt.data.curate.config import FilterConfig

FilterResult = bool | tuple[bool, str]
_CHAR_RUN_CACHE: dict[int, re.Pattern] = {}


def _char_run(n: int) -> re.Pattern:
    if n not in _CHAR_RUN_CACHE:
        _CHAR_RUN_CACHE[n] = re.compile(r"(\S)\1{%d,}" % (n - 1))
    return _CHAR_RUN_CACHE[n]


def empty(text: str, cfg: FilterConfig) -> FilterResult:
    return (False, "empty") if not text.strip() else True


def length(text: str, cfg: FilterConfig) -> FilterResult:
    n_chars, n_words = len(text), len(text.split())
    if n_chars < cfg.min_chars or n_words < cfg.min_words:
        return False, "too_short"
    if (cfg.max_chars is not None and n_chars > cfg.max_chars) or (cfg.max_words is not None and n_words > cfg.max_words):
        return False, "too_long"
    return True


_ASCII_LETTERS = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def alphabetic(text: str, cfg: FilterConfig) -> FilterResult:
    chars = "".join(text.split())  # non-space characters
    if not chars:
        return True
    rest = chars.translate(_ASCII_LETTERS)  # per-character checks only for what is not an ASCII letter
    n_alpha = len(chars) - len(rest) + sum(map(str.isalpha, rest))
    if n_alpha / len(chars) < cfg.min_alpha_ratio:
        return False, "non_alphabetic"
    return True


def repetition(text: str, cfg: FilterConfig) -> FilterResult:
    if cfg.max_char_run is not None and _char_run(cfg.max_char_run).search(text):
        return False, "repeated_chars"
    if cfg.max_word_run is not None:
        run, prev = 1, None
        for w in text.lower().split():
            run = run + 1 if w == prev else 1
            if run >= cfg.max_word_run and any(c.isalpha() for c in w):
                return False, "repeated_words"
            prev = w
    return True


_LANGID = None


def language_of(text: str) -> tuple[str, float]:
    """langid.py's language and normalised probability (its model ships inside the package: no download)."""
    global _LANGID
    if _LANGID is None:
        from langid.langid import LanguageIdentifier, model

        _LANGID = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    lang, prob = _LANGID.classify(text)
    return lang, float(prob)


def language(text: str, cfg: FilterConfig) -> FilterResult:
    lc = cfg.language
    if not lc.expected or len(text) < lc.min_chars:
        return True
    lang, prob = language_of(text)
    if lang not in lc.expected and prob >= lc.min_confidence:
        return False, f"language:{lang}"
    return True


FILTERS: list[Callable[[str, FilterConfig], FilterResult]] = [empty, length, alphabetic, repetition, language]


def first_failure(text: str, cfg: FilterConfig) -> str | None:
    """The reason of the first filter the text fails, or None when it passes them all."""
    for f in FILTERS:
        res = f(text, cfg)
        if res is not True and not (isinstance(res, tuple) and res[0]):
            return res[1] if isinstance(res, tuple) else f.__name__
    return None
