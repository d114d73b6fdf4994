"""Micro-batching of concurrent /v1/classify requests: requests that arrive within a short wait window (or until
max_batch texts are waiting) are merged into one predict_proba call, which runs in the model's worker thread;
each request gets its own rows back. One batch is in flight at a time: requests that arrive while it runs wait for
it and go together in the next one as soon as it finishes, so under load batches grow instead of queueing up.

A batch that fails is retried request by request, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

Run = Callable[[Callable[..., Any], list[str]], Awaitable[Any]]  # runs fn(texts) off the event loop


class MicroBatcher:
    def __init__(self, predict: Callable[[list[str]], np.ndarray], run: Run, max_batch: int = 32,
                 wait_ms: float = 5.0) -> None:
        self.predict, self.run = predict, run
        self.max_batch, self.wait_s = max(1, max_batch), max(0.0, wait_ms) / 1000
        self.pending: list[tuple[list[str], asyncio.Future]] = []
        self.waiting = 0  # texts in self.pending
        self.timer: asyncio.TimerHandle | None = None
        self.running = False  # a predict call is in flight
        self.requests = 0  # requests answered through the batcher
        self.calls = 0  # predict calls made (batches + retries)

    async def submit(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.pending.append((texts, fut))
        self.waiting += len(texts)
        self.requests += 1
        if not self.running:
            if self.waiting >= self.max_batch:
                self._flush()
            elif self.timer is None:
                self.timer = loop.call_later(self.wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.running or not self.pending:
            return
        take, n = 0, 0  # whole requests, up to max_batch texts (at least one request)
        while take < len(self.pending) and (take == 0 or n + len(self.pending[take][0]) <= self.max_batch):
            n += len(self.pending[take][0])
            take += 1
        batch, self.pending = self.pending[:take], self.pending[take:]
        self.waiting -= n
        self.running = True
        asyncio.ensure_future(self._predict(batch))

    async def _predict(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        try:
            await self._answer(batch)
        finally:
            self.running = False
            if self.pending:  # they waited for the batch in flight: they go now
                self._flush()

    async def _answer(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [t for ts, _ in batch for t in ts]
        self.calls += 1
        try:
            probs = await self.run(self.predict, texts)
        except Exception as e:  # noqa: BLE001 — handed to the requests' futures
            if len(batch) == 1:
                _set(batch[0][1], exc=e)
                return
            for ts, fut in batch:  # alone, so only the bad request fails
                self.calls += 1
                try:
                    _set(fut, await self.run(self.predict, ts))
                except Exception as e1:  # noqa: BLE001
                    _set(fut, exc=e1)
            return
        i = 0
        for ts, fut in batch:
            _set(fut, probs[i:i + len(ts)])
            i += len(ts)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "predict_calls": self.calls,
                "mean_requests_per_call": self.requests / self.calls if self.calls else None}


def _set(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
