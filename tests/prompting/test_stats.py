"""Statistics over repeats: with one repeat they are eval.metrics' bootstrap; the repeats' mean and spread by hand."""

from __future__ import annotations

import numpy as np

from llmopt.eval.metrics import bootstrap_ci, paired_bootstrap
from llmopt.prompting.run import paired_repeats, repeat_stats


def test_one_repeat_matches_eval_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    a = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    b = np.where(rng.random(200) < 0.5, y, rng.integers(0, 3, 200))
    st = repeat_stats(y.tolist(), [a.tolist()], 3, resamples=500, seed=4)
    ref = bootstrap_ci(y, a, 3, resamples=500, seed=4)
    assert st["ci"] == ref["accuracy"] and np.isclose(st["accuracy"], np.mean(a == y))
    np.testing.assert_allclose(st["macro_f1_ci"], ref["macro_f1"])
    p = paired_repeats(y.tolist(), [a.tolist()], [b.tolist()], 3, resamples=500, seed=5)
    q = paired_bootstrap(y, a, b, 3, resamples=500, seed=5)
    assert p["accuracy"] == q["accuracy"]
    np.testing.assert_allclose(p["macro_f1"]["diff"], q["macro_f1"]["diff"])


def test_repeats_average_and_unparseable_counts_as_wrong_not_as_a_class():
    y = [0, 1, 0, 1]
    preds = [[0, 1, 0, 1], [0, 1, 2, 2]]  # 2 = unparseable in the second repeat
    st = repeat_stats(y, preds, 2, resamples=200)
    assert st["accuracy_per_repeat"] == [1.0, 0.5] and st["accuracy"] == 0.75 and st["repeats"] == 2
    assert np.isclose(st["accuracy_sd"], np.std([1.0, 0.5], ddof=1))
    # macro-F1 over the two real labels: repeat 2 has recall 1/2 and precision 1 on each → F1 2/3
    assert np.isclose(st["macro_f1"], (1.0 + 2 / 3) / 2)
    p = paired_repeats(y, preds, [[1, 0, 1, 0]], 2, resamples=200)
    assert np.isclose(p["accuracy"]["diff"], 0.75) and p["accuracy"]["p_value"] < 0.2
