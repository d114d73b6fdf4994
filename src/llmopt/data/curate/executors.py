"""Executors: where partitions of curate/augment run. Each maps a picklable top-level function over a lazy
stream of argument tuples with a bounded number in flight (the coordinator never materialises the stream) and
yields (task index, result) as tasks finish, in any order.

- `InProcess`: this process, one task after another (the default; what a single-machine run did before).
- `Pool`: a `concurrent.futures.ProcessPoolExecutor` (spawned workers). A worker that dies (kill -9, OOM)
  breaks the pool: the pool is rebuilt and the tasks that had not returned are submitted again (`retries`).
- `Dask`: a `distributed.Client` on a scheduler address, or a `LocalCluster` for address 'local'. Dask itself
  reschedules the tasks of a worker that dies (up to its `distributed.scheduler.allowed-failures`, 3); a task
  that raises (bad input) fails the run at once.

Tasks write their outputs themselves (atomically, under the stage's work folder), so a task that is run twice
writes the same files; results are small summaries. A remote Dask cluster needs the work folder and the input
on storage every worker sees (a shared filesystem), and llmopt installed on the workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from llmopt.errors import RecipeError


class InProcess:
    kind = "inprocess"
    workers = 1

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map_unordered(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(tasks):
            yield i, fn(*args)


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per partition: the pool is the parallelism


class Pool:
    kind = "pool"

    def __init__(self, workers: int, retries: int = 2):
        self.workers, self.retries = workers, retries
        self._pool = None

    def _start(self) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)

    def __enter__(self) -> "Pool":
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def pids(self) -> list[int]:
        """The worker processes' ids (what a test kills)."""
        return list(getattr(self._pool, "_processes", {}) or {})

    def map_unordered(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        it = enumerate(tasks)
        pending: dict[Any, tuple[int, tuple]] = {}
        redo: list[tuple[int, tuple]] = []
        tries: dict[int, int] = {}
        limit = 2 * self.workers
        exhausted = False
        while True:
            while len(pending) < limit and (redo or not exhausted):
                if redo:
                    i, args = redo.pop(0)
                else:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    i, args = nxt
                pending[self._pool.submit(fn, *args)] = (i, args)
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i, args = pending.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    broken = True
                    tries[i] = tries.get(i, 0) + 1
                    if tries[i] > self.retries:
                        raise RuntimeError(f"partition task {i} lost its worker {tries[i]} times "
                                           "(killed, or out of memory?); giving up") from None
                    redo.append((i, args))
                    continue
                yield i, res
            if broken:  # every other task in flight died with the pool: run them again on a new one
                for fut, (i, args) in pending.items():
                    tries[i] = tries.get(i, 0) + 1
                    redo.append((i, args))
                pending.clear()
                redo.sort(key=lambda t: t[0])
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._start()


class Dask:
    kind = "dask"

    def __init__(self, address: str, workers: int = 2, processes: bool = True):
        self.address, self.workers, self.processes = address, workers, processes
        self.client = self.cluster = None

    def __enter__(self) -> "Dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise RecipeError("executor kind 'dask' needs Dask distributed: pip install 'llmopt[scale]' "
                              "(or pip install 'dask[distributed]')") from None
        if self.address == "local":
            where = {"host": "127.0.0.1"} if self.processes else {}  # threads: an in-process transport
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=self.processes,
                                        dashboard_address=None, **where)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(self.address, timeout="20s")
            except OSError as e:
                raise RecipeError(f"no Dask scheduler answered at {self.address} ({e}). Start one "
                                  "(dask scheduler; dask worker ADDRESS) or use address: local") from None
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def map_unordered(self, fn: Callable, tasks: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        it = enumerate(tasks)
        index: dict[str, int] = {}
        ac = as_completed()
        limit = 2 * self.workers

        def submit_next() -> bool:
            nxt = next(it, None)
            if nxt is None:
                return False
            i, args = nxt
            fut = self.client.submit(fn, *args, pure=False)  # a bad row would raise again: no retries
            index[fut.key] = i
            ac.add(fut)
            return True

        n = 0
        while n < limit and submit_next():
            n += 1
        for fut in ac:
            res = fut.result()
            i = index.pop(fut.key)
            fut.release()
            yield i, res
            submit_next()


def make_executor(cfg: Any) -> InProcess | Pool | Dask:
    """The executor an `ExecutorConfig` names (use it as a context manager)."""
    if cfg is None or cfg.kind == "inprocess":
        return InProcess()
    if cfg.kind == "pool":
        return Pool(cfg.workers, cfg.retries)
    return Dask(cfg.address, cfg.workers)
