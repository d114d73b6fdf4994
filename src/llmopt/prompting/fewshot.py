"""Few-shot example selection from the train split: random, label-balanced, nearest neighbours of the query by
sentence embedding (the bundled MiniLM through sentence-transformers) and diverse (maximal marginal relevance).

Every strategy is seeded, draws from the train rows only and never returns a row whose text is the query's.
random and balanced choose one fixed set per draw (a prompt); nearest and mmr choose per query from the pool.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from llmopt.errors import RecipeError

STRATEGIES = ("random", "balanced", "nearest", "mmr")
PER_QUERY = ("nearest", "mmr")


def minilm_embedder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """Unit-length sentence embeddings from the bundled all-MiniLM-L6-v2 (models.py's `builtin: minilm`)."""
    from sentence_transformers import SentenceTransformer

    from llmopt.models import builtin_model_path

    model = SentenceTransformer(str(builtin_model_path("minilm")), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                       show_progress_bar=False), dtype=np.float32)

    return embed


class ExamplePool:
    """The train rows few-shot examples come from, with their embeddings computed once, on first need."""

    def __init__(self, rows: list[dict[str, Any]], embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        if not rows:
            raise RecipeError("few-shot examples need train rows, and the train split is empty.")
        self.rows = rows
        self._embed = embed
        self._vecs: np.ndarray | None = None
        self._query_vecs: dict[str, np.ndarray] = {}

    def embedder(self) -> Callable[[list[str]], np.ndarray]:
        if self._embed is None:
            self._embed = minilm_embedder()
        return self._embed

    def vectors(self) -> np.ndarray:
        if self._vecs is None:
            self._vecs = self.embedder()([r["text"] for r in self.rows])
        return self._vecs

    def embed_queries(self, texts: list[str]) -> None:
        """Embed many queries in one batch (faster than one at a time)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._query_vecs]
        if todo:
            self._query_vecs.update(zip(todo, self.embedder()(todo)))

    def query_vector(self, text: str) -> np.ndarray:
        self.embed_queries([text])
        return self._query_vecs[text]

    def subset(self, size: int | None, seed: int) -> "ExamplePool":
        """A seeded sample of `size` rows sharing this pool's embedder (and its vectors when computed)."""
        if size is None or size >= len(self.rows):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self.rows)), size))
        sub = ExamplePool([self.rows[i] for i in idx], self._embed)
        if self._vecs is not None:
            sub._vecs = self._vecs[idx]
        sub._query_vecs = self._query_vecs
        return sub


def _allowed(pool: ExamplePool, query_text: str | None) -> list[int]:
    return [i for i, r in enumerate(pool.rows) if r["text"] != query_text]


def select(pool: ExamplePool, strategy: str, k: int, seed: int, query_text: str | None = None,
           labels: list[str] | None = None, mmr_lambda: float = 0.5) -> list[dict[str, Any]]:
    """k example rows by `strategy` (see the module docstring), in the order they go into the prompt."""
    if strategy not in STRATEGIES:
        raise RecipeError(f"unknown few-shot strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    if k == 0:
        return []
    cand = _allowed(pool, query_text)
    if k > len(cand):
        raise RecipeError(f"{k} few-shot examples asked for, but the train split has only {len(cand)} rows.")
    rng = random.Random(seed)
    if strategy == "random":
        chosen = rng.sample(cand, k)
    elif strategy == "balanced":
        chosen = _balanced(pool, cand, k, rng, labels)
    elif strategy == "nearest":
        sims = pool.vectors()[cand] @ pool.query_vector(query_text or "")
        order = np.argsort(-sims, kind="stable")[:k]
        chosen = [cand[i] for i in order][::-1]  # the most similar example last, next to the query
    else:
        chosen = _mmr(pool, cand, k, query_text or "", mmr_lambda)[::-1]
    return [pool.rows[i] for i in chosen]


def _balanced(pool: ExamplePool, cand: list[int], k: int, rng: random.Random, labels: list[str] | None) -> list[int]:
    """k // L examples of every label (the remainder to labels drawn at random), shuffled together."""
    by: dict[str, list[int]] = {}
    for i in cand:
        by.setdefault(pool.rows[i]["label"], []).append(i)
    labs = [lab for lab in (labels or sorted(by)) if by.get(lab)]
    per = {lab: k // len(labs) for lab in labs}
    for lab in rng.sample(labs, k % len(labs)):
        per[lab] += 1
    short = [lab for lab in labs if len(by[lab]) < per[lab]]
    if short:
        raise RecipeError(f"balanced few-shot: label {short[0]!r} has only {len(by[short[0]])} train rows, fewer "
                          f"than the {per[short[0]]} asked for; lower k.")
    chosen = [i for lab in labs for i in rng.sample(by[lab], per[lab])]
    rng.shuffle(chosen)
    return chosen


def _mmr(pool: ExamplePool, cand: list[int], k: int, query_text: str, lam: float) -> list[int]:
    """Maximal marginal relevance: each next example maximises lam·sim(query) − (1 − lam)·max sim(chosen)."""
    vecs = pool.vectors()[cand]
    rel = vecs @ pool.query_vector(query_text)
    chosen: list[int] = []
    red = np.full(len(cand), -np.inf)
    for _ in range(k):
        score = lam * rel - (1 - lam) * red if chosen else lam * rel.copy()
        score[chosen] = -np.inf
        j = int(np.argmax(score))
        chosen.append(j)
        red = np.maximum(red, vecs @ vecs[j])
    return [cand[j] for j in chosen]
