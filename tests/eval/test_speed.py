"""The speed harness: keyword-only measure_speed keeps its keys; interleaved paired timing in ABBA order."""

from __future__ import annotations

import time

import pytest

from llmopt.eval.speed import bootstrap_ratio_ci, compare_latency, measure_speed

TEXTS = [f"sentence number {i}" for i in range(40)]


def _sleeper(seconds: float, log: list | None = None, tag: str = ""):
    def predict(batch: list[str]) -> None:
        if log is not None:
            log.append((tag, tuple(batch)))
        time.sleep(seconds)
    return predict


def test_measure_speed_is_keyword_only_and_keeps_its_keys():
    with pytest.raises(TypeError):
        measure_speed(_sleeper(0), TEXTS, 1)  # type: ignore[misc]
    out = measure_speed(_sleeper(0.0005), texts=TEXTS, threads=1, warmup=2, latency_runs=12, throughput_batches=2)
    for key in ("latency_b1_p50_ms", "latency_b1_p95_ms", "latency_b1_n", "throughput_b32", "throughput_n", "threads"):
        assert key in out
    assert out["latency_b1_n"] == len(out["latency_b1_runs_ms"]) == 12
    assert min(out["latency_b1_runs_ms"]) >= 0.5 and out["latency_b1_p50_ms"] >= 0.5


def test_compare_latency_alternates_abba_blocks_on_the_same_inputs():
    log: list = []
    out = compare_latency(child=_sleeper(0, log, "c"), parent=_sleeper(0, log, "p"), texts=TEXTS, threads=1,
                          runs=6, warmup=1, resamples=200, seed=0, block=3, settle_s=0)
    timed = log[2:]  # after one warm-up pair
    # blocks of 1 uncounted settling call + 3 timed calls; child block first on even pairs, parent first on odd
    assert "".join(tag for tag, _ in timed) == "cccc" "pppp" "pppp" "cccc"
    blocks = [timed[i:i + 4] for i in range(0, 16, 4)]
    for a, b in ((blocks[0], blocks[1]), (blocks[2], blocks[3])):  # a block pair times the same texts
        assert [t for _, t in a[1:]] == [t for _, t in b[1:]]
    assert [t for _, t in blocks[0][1:]] == [(TEXTS[0],), (TEXTS[1],), (TEXTS[2],)]
    assert [t for _, t in blocks[2][1:]] == [(TEXTS[3],), (TEXTS[4],), (TEXTS[5],)]
    assert len(out["child_runs_ms"]) == len(out["parent_runs_ms"]) == 6 and out["block_pairs"] == 2
    assert out["method"] == "paired" and out["order"] == "ABBA blocks of 3"


def test_compare_latency_two_vs_one_ms():
    out = compare_latency(child=_sleeper(0.001), parent=_sleeper(0.002), texts=TEXTS, threads=1,
                          runs=60, warmup=3, resamples=1000, seed=0)
    lo, hi = out["ratio_ci"]
    assert lo <= out["ratio"] <= hi < 0.9  # ~0.5 plus timer and scheduler overhead
    assert out["child_p50_ms"] < out["parent_p50_ms"]


def test_bootstrap_ratio_ci_by_hand():
    ratio, (lo, hi) = bootstrap_ratio_ci([1.0] * 10, [2.0] * 10, paired=True, resamples=100, seed=0)
    assert ratio == lo == hi == 0.5
    ratio, (lo, hi) = bootstrap_ratio_ci([3.0, 3.0, 3.0], [1.0, 1.0], paired=False, resamples=100, seed=0)
    assert ratio == lo == hi == 3.0
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1.0], [1.0, 2.0], paired=True, resamples=10, seed=0)
