"""The speed harness: batch-1 latency p50/p95, batch-32 throughput, peak memory — same for every model —
and interleaved paired timing of two models, the only timing that decides which one is faster."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's resident memory in a thread; `.peak_delta` is the rise over the start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_delta(self) -> int:
        return self.peak - self.start


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op threads for the timed section (ONNX Runtime sessions pin theirs when built)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def measure_speed(
    predict: Callable[[list[str]], Any],
    *,
    texts: list[str],
    threads: int,
    warmup: int = 10,
    latency_runs: int = 200,
    batch_size: int = 32,
    throughput_batches: int = 10,
) -> dict[str, Any]:
    """Time `predict` end to end (tokenization included) on real texts after warm-up.

    One model alone: good for the table, not for deciding which of two models is faster (the machine
    drifts between two such measurements) — use `compare_latency` for that.
    """
    with _torch_threads(threads):
        for i in range(warmup):
            predict([texts[i % len(texts)]])
        predict(texts[:batch_size])
        times = []
        for i in range(latency_runs):
            t = texts[i % len(texts)]
            t0 = time.perf_counter()
            predict([t])
            times.append(time.perf_counter() - t0)
        n_done, t_total = 0, 0.0
        for b in range(throughput_batches):
            start = (b * batch_size) % max(1, len(texts) - batch_size + 1)
            batch = texts[start : start + batch_size]
            t0 = time.perf_counter()
            predict(batch)
            t_total += time.perf_counter() - t0
            n_done += len(batch)
    ms = np.array(times) * 1000
    return {
        "latency_b1_p50_ms": float(np.percentile(ms, 50)),
        "latency_b1_p95_ms": float(np.percentile(ms, 95)),
        "latency_b1_n": len(times),
        "latency_b1_runs_ms": [round(float(v), 4) for v in ms],  # raw, in run order
        "throughput_b32": float(n_done / t_total) if t_total > 0 else None,
        "throughput_n": n_done,
        "threads": threads,
    }


def bootstrap_ratio_ci(
    child_ms: Any, parent_ms: Any, *, paired: bool, resamples: int, seed: int, alpha: float = 0.05
) -> tuple[float, list[float]]:
    """Median latency ratio child/parent and its percentile-bootstrap (1 - alpha) interval.

    Paired (the same input timed back to back): the median of the per-pair ratios, pairs resampled
    together. Unpaired (two separate runs): the ratio of the two medians, each run resampled on its own.
    """
    c, p = np.asarray(child_ms, dtype=float), np.asarray(parent_ms, dtype=float)
    if len(c) == 0 or len(p) == 0 or (paired and len(c) != len(p)):
        raise ValueError("bootstrap_ratio_ci needs latencies for both models (the same count when paired)")
    rng = np.random.default_rng(seed)
    if paired:
        r = c / p
        ratio = float(np.median(r))
        boot = np.median(r[rng.integers(0, len(r), (resamples, len(r)))], axis=1)
    else:
        ratio = float(np.median(c) / np.median(p))
        boot = (np.median(c[rng.integers(0, len(c), (resamples, len(c)))], axis=1)
                / np.median(p[rng.integers(0, len(p), (resamples, len(p)))], axis=1))
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return ratio, [float(lo), float(hi)]


def compare_latency(
    *,
    child: Callable[[list[str]], Any],
    parent: Callable[[list[str]], Any],
    texts: list[str],
    threads: int,
    runs: int = 200,
    warmup: int = 10,
    resamples: int = 1000,
    seed: int = 0,
    block: int = 5,
    settle_s: float = 0.005,
) -> dict[str, Any]:
    """Interleaved paired batch-1 timing of two predictors that are alive at the same time.

    The runs go in blocks of `block` calls per model, in ABBA block order (child block first on even pairs,
    parent block first on odd ones), so that warm caches and slow drift of the machine (clock, neighbours)
    fall on both sides alike. At each switch the machine rests `settle_s` and the first call of the block is
    not counted: the thread pool of the model just timed (ONNX Runtime, OpenMP) may still be spinning, and
    timing one runtime while the other's threads spin made a PyTorch parent look several times slower than
    it is alone. `ratio` is the median over block pairs of median(child)/median(parent), `ratio_ci` a
    bootstrap 95% interval over the block pairs; below 1 means the child is faster.
    """
    if not texts:
        raise ValueError("compare_latency needs at least one text")
    block = max(2, block)
    pairs = max(2, runs // block)
    child_s: list[float] = []
    parent_s: list[float] = []
    child_blocks: list[float] = []
    parent_blocks: list[float] = []
    with _torch_threads(threads):
        for i in range(warmup):
            t = [texts[i % len(texts)]]
            child(t)
            parent(t)
        for j in range(pairs):
            inputs = [[texts[(j * block + i) % len(texts)]] for i in range(block)]  # the same for both sides
            order = ((child, child_s, child_blocks), (parent, parent_s, parent_blocks))
            for fn, out, medians in order if j % 2 == 0 else order[::-1]:
                time.sleep(settle_s)
                fn(inputs[0])  # not counted: the other runtime's threads may still spin
                times = []
                for t in inputs:
                    t0 = time.perf_counter()
                    fn(t)
                    times.append(time.perf_counter() - t0)
                out.extend(times)
                medians.append(float(np.median(times)))
    c_ms, p_ms = np.array(child_s) * 1000, np.array(parent_s) * 1000
    ratio, ci = bootstrap_ratio_ci(np.array(child_blocks), np.array(parent_blocks), paired=True,
                                   resamples=resamples, seed=seed)
    return {
        "method": "paired",
        "order": f"ABBA blocks of {block}",
        "block_pairs": pairs,
        "ratio": ratio,
        "ratio_ci": ci,
        "child_p50_ms": float(np.median(c_ms)),
        "parent_p50_ms": float(np.median(p_ms)),
        "runs": runs,
        "warmup": warmup,
        "resamples": resamples,
        "threads": threads,
        "child_runs_ms": [round(float(v), 4) for v in c_ms],
        "parent_runs_ms": [round(float(v), 4) for v in p_ms],
    }
