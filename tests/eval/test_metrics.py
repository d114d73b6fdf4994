import numpy as np
import pytest

from llmopt.eval.metrics import (
    accuracy, bootstrap_ci, classification_report, confusion, macro_f1, paired_bootstrap, per_class,
)

Y = np.array([0, 0, 0, 1, 1, 2])
P = np.array([0, 0, 1, 1, 2, 2])


def test_hand_computed_values():
    # class 0: tp2 fp0 fn1 → F1 = 4/5; class 1: tp1 fp1 fn1 → 1/2; class 2: tp1 fp1 fn0 → 2/3
    assert accuracy(Y, P) == pytest.approx(4 / 6)
    assert macro_f1(Y, P, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert confusion(Y, P, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pc = per_class(Y, P, ["a", "b", "c"])
    assert pc["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert pc["c"]["precision"] == 0.5 and pc["c"]["recall"] == 1.0


def test_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    assert macro_f1(y, p, 4) == pytest.approx(f1_score(y, p, average="macro"))


def test_absent_class_counts_as_zero_f1():
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 2) == pytest.approx(0.5)


def test_interval_covers_true_value_on_synthetic_data():
    # a classifier that is right with probability 0.8: the 95% interval should cover 0.8 most of the time
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        y = rng.integers(0, 2, 500)
        p = np.where(rng.random(500) < 0.8, y, 1 - y)
        lo, hi = bootstrap_ci(y, p, 2, resamples=1000, seed=trial)["accuracy"]
        covered += lo <= 0.8 <= hi
        assert lo < accuracy(y, p) < hi
    assert covered >= 34  # ~95% expected; 34/40 leaves room for chance


def test_interval_is_seeded_and_narrows_with_n():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    p = np.where(rng.random(2000) < 0.7, y, 1 - y)
    a = bootstrap_ci(y, p, 2, seed=5)
    assert a == bootstrap_ci(y, p, 2, seed=5)
    small = bootstrap_ci(y[:200], p[:200], 2, seed=5)["accuracy"]
    assert (a["accuracy"][1] - a["accuracy"][0]) < (small[1] - small[0])


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    good = np.where(rng.random(1000) < 0.9, y, 1 - y)
    bad = np.where(rng.random(1000) < 0.7, y, 1 - y)
    r = paired_bootstrap(y, good, bad, 2, resamples=1000, seed=0)
    assert r["accuracy"]["diff"] == pytest.approx(accuracy(y, good) - accuracy(y, bad))
    assert r["accuracy"]["p_value"] < 0.01 and r["accuracy"]["ci"][0] > 0
    same = paired_bootstrap(y, good, good, 2, resamples=1000, seed=0)
    assert same["accuracy"]["diff"] == 0 and same["accuracy"]["p_value"] == 1.0


def test_report_has_n_and_intervals():
    rep = classification_report(Y, P, ["a", "b", "c"], resamples=1000, seed=0)
    assert rep["n"] == 6 and rep["bootstrap_resamples"] == 1000
    assert rep["accuracy_ci"][0] <= rep["accuracy"] <= rep["accuracy_ci"][1]
