"""Baselines trained on the same train split: majority class and TF-IDF + logistic regression."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from llmopt.fsutil import atomic_write_text

class MajorityBaseline:
    """Always predicts the most frequent train label."""

    runtime = "python"

    def __init__(self, train_labels: list[int], k: int) -> None:
        self.k = k
        self.label = Counter(train_labels).most_common(1)[0][0]
        self.params = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.k))
        out[:, self.label] = 1.0
        return out

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"type": "majority", "label_id": int(self.label)}))


class TfidfBaseline:
    """Word 1–2-gram TF-IDF (sublinear tf) + logistic regression (C=10), scikit-learn."""

    runtime = "scikit-learn"

    def __init__(self, train_texts: list[str], train_labels: list[int], k: int, seed: int) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.k = k
        self.vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        x = self.vec.fit_transform(train_texts)
        self.clf = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
        self.clf.fit(x, train_labels)
        self.params = int(self.clf.coef_.size + self.clf.intercept_.size)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        proba = self.clf.predict_proba(self.vec.transform(texts))
        out = np.zeros((len(texts), self.k))
        out[:, self.clf.classes_] = proba
        return out

    def save(self, path: Path) -> None:
        """Plain JSON (vocabulary, idf, weights): no pickle, and an honest size on disk."""
        obj = {
            "type": "tfidf_logreg",
            "vocabulary": {t: int(i) for t, i in self.vec.vocabulary_.items()},
            "idf": self.vec.idf_.tolist(),
            "classes": self.clf.classes_.tolist(),
            "coef": self.clf.coef_.tolist(),
            "intercept": self.clf.intercept_.tolist(),
        }
        atomic_write_text(path, json.dumps(obj))
