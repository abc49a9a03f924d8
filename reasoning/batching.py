"""Lockstep batching: problems solved side by side in threads; their engine calls run as one batch.

Each solve registers its thread as a worker (`Solver.solve` does). An engine that batches (vLLM) sends
every call through `Lockstep.call`: the call waits until every registered worker is waiting on some
engine call (or `max_wait` passed), and the last one to arrive runs all waiting calls, one batched
engine call per engine. So a round of `solve_many` is one batched draft call, one batched judge call,
and one batched target call for the steps that were escalated, as in RSD's batched stepping; and the
requests that a server handles at the same time are batched the same way.

A thread that is not a worker (or a lone worker) runs its call at once. `queued(engine)` is the
number of calls waiting for an engine, the load signal of load-aware routing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


class BatchEngine(Protocol):
    def run_batch(self, requests: Sequence[Any]) -> list[Any]:
        """Run many requests in one engine call; one result (or Exception instance) per request."""
        ...


@dataclass(eq=False)
class _Call:
    request: Any
    done: bool = False
    result: Any = None
    taken: bool = False
    t0: float = field(default_factory=time.perf_counter)


class Lockstep:
    def __init__(self, max_wait: float = 0.05):
        self.max_wait = max_wait
        self._cv = threading.Condition()
        self._local = threading.local()
        self._workers = 0
        self._waiting = 0
        self._flushing = False
        self._pending: dict[BatchEngine, list[_Call]] = {}
        self._in_flight: dict[BatchEngine, int] = {}
        self.batches = 0  # engine calls made (for tests and benchmarks)
        self.batched_requests = 0

    @contextmanager
    def worker(self) -> Iterator[None]:
        """Register the calling thread as a worker for the duration of the block (re-entrant)."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            with self._cv:
                self._workers += 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cv:
                    self._workers -= 1
                    self._cv.notify_all()

    def queued(self, engine: BatchEngine) -> int:
        """Calls waiting for or running on `engine` now."""
        with self._cv:
            return len(self._pending.get(engine, ())) + self._in_flight.get(engine, 0)

    def call(self, engine: BatchEngine, request: Any) -> Any:
        if not getattr(self._local, "depth", 0):
            return self._run_direct(engine, request)
        c = _Call(request)
        with self._cv:
            self._pending.setdefault(engine, []).append(c)
            self._waiting += 1
            self._cv.notify_all()
            try:
                while not c.done:
                    ready = self._waiting >= self._workers or time.perf_counter() - c.t0 >= self.max_wait
                    if ready and not self._flushing and not c.taken:
                        work = self._take()
                        self._cv.release()
                        try:
                            self._flush(work)
                        finally:
                            self._cv.acquire()
                            self._flushing = False
                            for eng, calls in work:
                                self._in_flight[eng] -= len(calls)
                            self._cv.notify_all()
                        continue
                    self._cv.wait(timeout=self.max_wait / 4)
            finally:
                self._waiting -= 1
        if isinstance(c.result, BaseException):
            raise c.result
        return c.result

    def _take(self) -> list[tuple[BatchEngine, list[_Call]]]:
        self._flushing = True
        work = [(eng, calls) for eng, calls in self._pending.items() if calls]
        self._pending = {}
        for eng, calls in work:
            self._in_flight[eng] = self._in_flight.get(eng, 0) + len(calls)
            for c in calls:
                c.taken = True
        return work

    def _flush(self, work: list[tuple[BatchEngine, list[_Call]]]) -> None:
        for eng, calls in work:
            try:
                results = eng.run_batch([c.request for c in calls])
            except Exception as e:  # noqa: BLE001 - handed to every caller of the batch
                results = [e] * len(calls)
            self.batches += 1
            self.batched_requests += len(calls)
            with self._cv:
                for c, r in zip(calls, results):
                    c.result, c.done = r, True
                self._cv.notify_all()

    def _run_direct(self, engine: BatchEngine, request: Any) -> Any:
        with self._cv:
            self._in_flight[engine] = self._in_flight.get(engine, 0) + 1
        try:
            (result,) = engine.run_batch([request])
        finally:
            with self._cv:
                self._in_flight[engine] -= 1
        self.batches += 1
        self.batched_requests += 1
        if isinstance(result, BaseException):
            raise result
        return result


LOCKSTEP = Lockstep()


def run_threads(fn: Callable[[Any], Any], items: Sequence[Any], width: int) -> list[Any]:
    """fn(item) for every item, `width` at a time, each in a worker thread of LOCKSTEP; results in order.
    An exception is returned in place of its item's result."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: Any) -> Any:
        with LOCKSTEP.worker():
            try:
                return fn(item)
            except Exception as e:  # noqa: BLE001 - reported per item
                return e

    with ThreadPoolExecutor(max_workers=max(1, width), thread_name_prefix="specstep") as pool:
        return list(pool.map(one, items))
