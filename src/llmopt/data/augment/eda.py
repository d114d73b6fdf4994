"""EDA (Wei & Zou 2019, "Easy Data Augmentation"): synonym replacement, random insertion, random swap, random
deletion — on whitespace tokens, seeded per (row, op, copy) so a rerun or a resumed run gives the same text.
Plus Tang et al. 2019's n-gram sampling (`ngram`: a contiguous run of 1–5 of the row's words), meant for a
transfer set the teacher labels (the variant keeps its source's label in the augmented data artifact, which a
short n-gram may not deserve: use it for distillation, or with the label filter).

Synonyms come from WordNet for the word's part of speech. nltk's perceptron tagger needs its own data
(`averaged_perceptron_tagger_eng`), which is often not installed; without it the part of speech is WordNet's
own most frequent sense of the word (the POS whose senses have the highest tagged-corpus counts, then the most
senses) — `pos_source()` says which one is in use. Stop words (scikit-learn's English list) are never replaced
and never the source of an insertion.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

OPS = ("synonym", "insert", "swap", "delete", "ngram")
NGRAM_MAX = 5  # Tang et al. 2019: n uniform in 1..5
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_PENN_TO_WN = {"J": "a", "V": "v", "N": "n", "R": "r"}


@functools.cache
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@functools.cache
def _tagger() -> Any:
    """nltk's pos_tag when its tagger data is installed, else None."""
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng")
    except LookupError:
        return None
    return nltk.pos_tag


def pos_source() -> str:
    """Where parts of speech come from: 'nltk-tagger' or 'wordnet-most-frequent'."""
    return "nltk-tagger" if _tagger() is not None else "wordnet-most-frequent"


def rng_for(seed: int, source_id: Any, op: str, copy: int) -> random.Random:
    """One generator per variant: the text of a variant does not depend on which other rows were augmented."""
    return random.Random(f"{seed}:{source_id}:{op}:{copy}")  # str seeds hash with sha512: stable across runs


class Synonyms:
    """WordNet synonyms of a word in its part of speech, sorted (deterministic), cached."""

    def __init__(self, wordnet: Any) -> None:
        self.wn = wordnet
        self._cache: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self._counts: dict[str, dict[str, int]] | None = None

    def _tag_counts(self) -> dict[str, dict[str, int]]:
        """word → {pos: tagged-corpus count of its senses}, read once from WordNet's cntlist.rev (asking nltk
        lemma by lemma binary-searches that file each time: 1 ms a lemma)."""
        if self._counts is None:
            counts: dict[str, dict[str, int]] = {}
            pos_of = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
            with self.wn.open("cntlist.rev") as fp:
                for line in fp:
                    key, _, count = line.split()
                    lemma, _, rest = key.partition("%")
                    per = counts.setdefault(lemma, {})
                    pos = pos_of.get(rest[:1])
                    if pos:
                        per[pos] = per.get(pos, 0) + int(count)
            self._counts = counts
        return self._counts

    def best_pos(self, word: str) -> str | None:
        """The part of speech whose senses of `word` are most frequent in WordNet's tagged corpus; untagged
        words: the part of speech with the most senses (ties: n, v, a, r)."""
        senses = {("a" if p == "s" else p): len(offs) for p, offs in self.wn._lemma_pos_offset_map.get(word, {}).items()}
        if not senses:
            return None
        tagged = self._tag_counts().get(word, {})
        order = "nvar"
        return max(senses, key=lambda p: (tagged.get(p, 0), senses[p], -order.index(p)))

    def __call__(self, word: str, penn_tag: str | None = None) -> tuple[str, ...]:
        word = word.lower()
        pos = _PENN_TO_WN.get(penn_tag[:1]) if penn_tag else None
        key = (word, pos)
        if key not in self._cache:
            pos = pos or self.best_pos(word)
            found = set()
            if pos is not None:
                for s in self.wn.synsets(word, pos=pos) + (self.wn.synsets(word, pos="s") if pos == "a" else []):
                    for lem in s.lemmas():
                        name = lem.name().replace("_", " ").lower()
                        if name != word and name.isascii():
                            found.add(name)
            self._cache[key] = tuple(sorted(found))
        return self._cache[key]


def _core(token: str) -> tuple[str, str, str]:
    m = _EDGE.match(token)
    return m.group(1), m.group(2), m.group(3)


def _candidates(words: list[str], synonyms: Synonyms) -> list[tuple[int, tuple[str, ...]]]:
    """(position, synonyms) of each non-stop word that has synonyms, in its tagged part of speech."""
    cores = [_core(w)[1] for w in words]
    tagger = _tagger()
    tags = [t for _, t in tagger(cores)] if tagger and cores else [None] * len(cores)
    out = []
    for i, (core, tag) in enumerate(zip(cores, tags)):
        if core.isalpha() and core.lower() not in stop_words():
            syns = synonyms(core, tag)
            if syns:
                out.append((i, syns))
    return out


def _n_changes(words: list[str], rate: float) -> int:
    return max(1, int(rate * len(words)))


def synonym_replace(words: list[str], rate: float, rng: random.Random, synonyms: Synonyms) -> list[str]:
    cands = _candidates(words, synonyms)
    rng.shuffle(cands)
    out = list(words)
    for i, syns in cands[: _n_changes(words, rate)]:
        pre, core, post = _core(out[i])
        new = rng.choice(syns)
        out[i] = pre + (new.capitalize() if core[:1].isupper() else new) + post
    return out


def random_insert(words: list[str], rate: float, rng: random.Random, synonyms: Synonyms) -> list[str]:
    cands = _candidates(words, synonyms)
    out = list(words)
    if not cands:
        return out
    for _ in range(_n_changes(words, rate)):
        _, syns = rng.choice(cands)
        out.insert(rng.randint(0, len(out)), rng.choice(syns))
    return out


def random_swap(words: list[str], rate: float, rng: random.Random) -> list[str]:
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(_n_changes(words, rate)):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_delete(words: list[str], rate: float, rng: random.Random) -> list[str]:
    if len(words) < 2:
        return list(words)
    out = [w for w in words if rng.random() >= rate]
    if len(out) == len(words):  # like the other ops, change at least one word
        del out[rng.randrange(len(out))]
    return out or [rng.choice(words)]  # never empty


def ngram_sample(words: list[str], rng: random.Random) -> list[str]:
    """A contiguous n-gram of the row, n uniform in 1..min(5, words − 1) (always shorter than the row)."""
    if len(words) < 2:
        return list(words)
    n = rng.randint(1, min(NGRAM_MAX, len(words) - 1))
    start = rng.randint(0, len(words) - n)
    return words[start : start + n]


def eda(text: str, op: str, rate: float, rng: random.Random, synonyms: Synonyms) -> str:
    """One EDA variant of `text`; never empty for a non-empty text (an op that cannot apply returns the text)."""
    words = text.split()
    if not words:
        return text
    if op == "synonym":
        out = synonym_replace(words, rate, rng, synonyms)
    elif op == "insert":
        out = random_insert(words, rate, rng, synonyms)
    elif op == "swap":
        out = random_swap(words, rate, rng)
    elif op == "delete":
        out = random_delete(words, rate, rng)
    elif op == "ngram":
        out = ngram_sample(words, rng)
    else:
        raise ValueError(f"unknown EDA op {op!r}; one of {OPS}")
    return " ".join(out)
