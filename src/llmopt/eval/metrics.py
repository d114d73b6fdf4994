"""Classification metrics with seeded bootstrap intervals and a paired bootstrap test."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """k×k counts, rows = true label, columns = predicted label."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def _f1_from_confusions(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 for a batch of confusion matrices (..., k, k); 0 where undefined."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    return float(_f1_from_confusions(confusion(y_true, y_pred, k)).mean())


def per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    cm = confusion(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    pred_n, true_n = cm.sum(axis=0), cm.sum(axis=1)
    prec = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    rec = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    f1 = _f1_from_confusions(cm)
    return {
        lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(true_n[i])}
        for i, lab in enumerate(labels)
    }


def _resampled_confusions(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    b = idx.shape[0]
    codes = (np.asarray(y_true) * k + np.asarray(y_pred))[idx] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals for accuracy and macro-F1 (same resamples for both)."""
    idx = bootstrap_indices(len(y_true), resamples, seed)
    cms = _resampled_confusions(y_true, y_pred, k, idx)
    acc = np.trace(cms, axis1=1, axis2=2) / len(y_true)
    f1 = _f1_from_confusions(cms).mean(axis=1)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {
        "accuracy": [float(np.percentile(acc, lo)), float(np.percentile(acc, hi))],
        "macro_f1": [float(np.percentile(f1, lo)), float(np.percentile(f1, hi))],
    }


def paired_bootstrap(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Model A minus model B on the same resamples: observed difference, 95% interval, two-sided p."""
    idx = bootstrap_indices(len(y_true), resamples, seed)
    out: dict[str, Any] = {"resamples": resamples}
    cms_a = _resampled_confusions(y_true, pred_a, k, idx)
    cms_b = _resampled_confusions(y_true, pred_b, k, idx)
    n = len(y_true)
    for name, da, db, obs in (
        ("accuracy", np.trace(cms_a, axis1=1, axis2=2) / n, np.trace(cms_b, axis1=1, axis2=2) / n,
         accuracy(y_true, pred_a) - accuracy(y_true, pred_b)),
        ("macro_f1", _f1_from_confusions(cms_a).mean(axis=1), _f1_from_confusions(cms_b).mean(axis=1),
         macro_f1(y_true, pred_a, k) - macro_f1(y_true, pred_b, k)),
    ):
        diff = da - db
        # share of resamples on each side of zero; twice the smaller is the two-sided p
        p = min(1.0, 2 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
        out[name] = {
            "diff": float(obs),
            "ci": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            "p_value": p,
        }
    return out


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], resamples: int, seed: int
) -> dict[str, Any]:
    k = len(labels)
    ci = bootstrap_ci(y_true, y_pred, k, resamples=resamples, seed=seed)
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, y_pred),
        "accuracy_ci": ci["accuracy"],
        "macro_f1": macro_f1(y_true, y_pred, k),
        "macro_f1_ci": ci["macro_f1"],
        "per_class": per_class(y_true, y_pred, labels),
        "confusion_matrix": confusion(y_true, y_pred, k).tolist(),
        "bootstrap_resamples": resamples,
    }
