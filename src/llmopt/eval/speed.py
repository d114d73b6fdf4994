"""The speed harness: batch-1 latency p50/p95, batch-32 throughput, peak memory — same for every model."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
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


def measure_speed(
    predict: Callable[[list[str]], Any],
    texts: list[str],
    threads: int,
    warmup: int = 10,
    latency_runs: int = 200,
    batch_size: int = 32,
    throughput_batches: int = 10,
) -> dict[str, Any]:
    """Time `predict` end to end (tokenization included) on real texts after warm-up."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
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
    finally:
        torch.set_num_threads(prev)
    ms = np.array(times) * 1000
    return {
        "latency_b1_p50_ms": float(np.percentile(ms, 50)),
        "latency_b1_p95_ms": float(np.percentile(ms, 95)),
        "latency_b1_n": len(times),
        "throughput_b32": float(n_done / t_total) if t_total > 0 else None,
        "throughput_n": n_done,
        "threads": threads,
    }
