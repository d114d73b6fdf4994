"""Likely label errors in a train split: confident learning (cleanlab) on out-of-fold probabilities.

The probabilities come from a cheap model trained k times, each time without the fold it predicts — TF-IDF
word/bigram features + logistic regression (seconds on SST-2's 6,920 rows on one core), or, with
method='minilm', the bundled MiniLM's mean-pooled sentence embeddings + logistic regression (one forward pass
over the split, then k small fits). The fine-tuned model's own probabilities on its train rows are not used:
they are in-sample — the model has fitted the noisy labels it is meant to contradict — and k-fold fine-tuning
is minutes per fold on CPU. The result is cached in RUN_DIR/review/labelcheck/ keyed by the split's sha256.
Measured on SST-2 train with 10% of labels flipped (seed 1, 2 busy cores): share of flipped rows in the top 2% / 5% /
10% of the ranking — tfidf 0.75 / 0.59 / 0.44 in 3 s, minilm 0.78 / 0.65 / 0.51 in 106 s (random order: 0.10).
TF-IDF stays the default so that `llmopt review` starts in seconds on large splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("tfidf", "minilm")


def _features_tfidf(texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=200_000).fit_transform(texts)


def embed_minilm(texts: list[str], batch: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised token states of the bundled all-MiniLM-L6-v2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from llmopt.models import builtin_model_path

    path = builtin_model_path("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


def out_of_fold_probs(texts: list[str], y: np.ndarray, n_classes: int, method: str = "tfidf", folds: int = 5,
                      seed: int = 0) -> np.ndarray:
    """P(label | text) for every row from a model that never saw that row (stratified k folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {METHODS}")
    x = _features_tfidf(texts) if method == "tfidf" else embed_minilm(texts)
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(folds, counts[counts > 0].min()))
    probs = np.zeros((len(y), n_classes))
    if k < 2:  # a class with one row: nothing to hold out
        probs[np.arange(len(y)), y] = 1.0
        return probs
    for tr, te in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        # liblinear: ~7x faster than lbfgs on 80k sparse TF-IDF columns for two classes; lbfgs (multinomial) else
        clf = LogisticRegression(C=4.0 if method == "tfidf" else 1.0, max_iter=2000,
                                 solver="liblinear" if n_classes == 2 else "lbfgs")
        clf.fit(x[tr], y[tr])
        p = np.zeros((len(te), n_classes))
        p[:, clf.classes_] = clf.predict_proba(x[te])
        probs[te] = p
    return probs


def rank_label_issues(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every row ordered most doubtful first, boolean mask of the rows confident learning flags). The order is
    cleanlab's self-confidence label quality (P of the given label, ascending); the mask is cleanlab's
    find_label_issues (prune by noise rate on the confident joint)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(y, probs, method="self_confidence")
    order = np.argsort(quality, kind="stable")
    present = np.unique(y)
    if len(present) < 2:
        return order, np.zeros(len(y), dtype=bool)
    mask = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    return order, np.asarray(mask, dtype=bool)


def check_stage(run: Any, stage: Any, method: str, folds: int, seed: int) -> dict[str, Any]:
    """Every row of `stage`'s train.jsonl, most doubtful first, as {"ranked": [(row, label quality, predicted
    label, its prob, flagged by cleanlab)], "flagged", "method", "rows"}; cached in
    run_dir/review/labelcheck/<stage>.json."""
    from llmopt.errors import DataError
    from llmopt.fsutil import atomic_write_json, read_json, read_jsonl, sha256_file

    path = stage.artifacts / "train.jsonl"
    labels = list(read_json(stage.artifacts / "labels.json")["labels"])
    sha = sha256_file(path)
    cache = Path(run.run_dir) / "review" / "labelcheck" / f"{stage.id}.json"
    key = {"sha256": sha, "method": method, "folds": folds, "seed": seed}
    if cache.is_file():
        got = read_json(cache)
        if got.get("key") == key:
            return got
    rows = read_jsonl(path)
    import sys

    print(f"review: ranking {len(rows):,} train rows of stage '{stage.id}' for label errors ({method}, {folds} folds; "
          "cached for next time)…", file=sys.stderr, flush=True)
    index = {lab: i for i, lab in enumerate(labels)}
    bad = next((n for n, r in enumerate(rows) if str(r.get("label")) not in index), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} has label {rows[bad].get('label')!r}, not one of {labels} "
                        f"({stage.artifacts / 'labels.json'}).")
    y = np.array([index[str(r["label"])] for r in rows])
    probs = out_of_fold_probs([str(r["text"]) for r in rows], y, len(labels), method, folds, seed)
    order, mask = rank_label_issues(y, probs)
    quality = probs[np.arange(len(y)), y]
    ranked = [(int(i), float(quality[i]), labels[int(probs[i].argmax())], float(probs[i].max()), bool(mask[i]))
              for i in order]
    out = {"key": key, "method": f"{method} + logistic regression, {folds}-fold out-of-fold, cleanlab",
           "rows": len(rows), "flagged": int(mask.sum()), "ranked": ranked}
    atomic_write_json(cache, out)
    return out
