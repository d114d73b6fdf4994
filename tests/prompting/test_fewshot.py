"""Few-shot selection: seeded, train rows only, never the query; balanced counts; nearest finds a planted twin."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llmopt.errors import RecipeError
from llmopt.prompting.fewshot import ExamplePool, select
from tests.conftest import make_rows

LABELS = ["negative", "positive"]


def test_random_is_seeded_and_never_the_query():
    rows = make_rows(40)
    pool = ExamplePool(rows)
    a, b = select(pool, "random", 5, seed=1), select(pool, "random", 5, seed=1)
    assert a == b and select(pool, "random", 5, seed=2) != a
    q = rows[0]["text"]
    for seed in range(30):
        assert q not in [r["text"] for r in select(pool, "random", 39, seed, query_text=q)]


def test_balanced_returns_equal_counts_per_label():
    # skewed pool: 30 positive, 6 negative, 3 of a third label
    rows = ([{"text": f"p{i}", "label": "positive"} for i in range(30)]
            + [{"text": f"n{i}", "label": "negative"} for i in range(6)]
            + [{"text": f"o{i}", "label": "other"} for i in range(3)])
    pool = ExamplePool(rows)
    for seed in range(5):
        got = Counter(r["label"] for r in select(pool, "balanced", 6, seed, labels=["negative", "other", "positive"]))
        assert got == {"negative": 2, "other": 2, "positive": 2}
    assert Counter(r["label"] for r in select(pool, "balanced", 4, 0, labels=LABELS)) == {"negative": 2, "positive": 2}
    with pytest.raises(RecipeError, match="'other' has only 3"):
        select(pool, "balanced", 12, 0, labels=["negative", "other", "positive"])


def test_nearest_returns_the_planted_most_similar_example_with_minilm():
    rows = make_rows(30)
    planted = {"text": "the chocolate cake recipe needs two eggs and a cup of sugar", "label": "positive"}
    pool = ExamplePool(rows[:15] + [planted] + rows[15:])
    got = select(pool, "nearest", 3, seed=0, query_text="how many eggs does this chocolate cake recipe need?")
    assert got[-1] == planted  # the most similar goes last, next to the query
    assert planted not in select(pool, "nearest", 3, seed=0, query_text=planted["text"])  # never the query itself


def test_mmr_trades_relevance_for_diversity():
    # embeddings by hand: the query is e0; two near-duplicates of it and one orthogonal-ish row
    vecs = {"q": [1, 0, 0], "a": [0.99, 0.14, 0], "a2": [0.99, 0.141, 0], "b": [0.5, 0, 0.866]}

    def embed(texts):
        v = np.asarray([vecs[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    pool = ExamplePool([{"text": t, "label": "positive"} for t in ("a", "a2", "b")], embed)
    assert [r["text"] for r in select(pool, "nearest", 2, 0, query_text="q")] == ["a2", "a"]
    # mmr: a first (most relevant), then b (a2 is nearly a copy of a), most relevant last
    assert [r["text"] for r in select(pool, "mmr", 2, 0, query_text="q", mmr_lambda=0.3)] == ["b", "a"]
