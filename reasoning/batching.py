"""Lockstep batching: problems solved side by side in threads; their engine calls run as one batch.

Each solve registers its thread as a worker (`Solver.solve` does). An engine that batches (vLLM) sends
every call through `Lockstep.call`: the call waits until every registered worker is waiting on some
engine call (or `max_wait` passed), and the last one to arrive runs all waiting calls, one batched
engine call per engine; a worker blocked in an unbatched engine (`elsewhere`) counts as waiting.
A round of `solve_many` is one batched draft call, one batched judge call, and one batched target call
for the steps that were escalated, as in RSD's batched stepping; the requests that a server handles at
the same time are batched the same way.

A thread that is not a worker (or a lone worker) runs its call at once. `queued(engine)` is the
number of calls waiting for an engine, the load signal of load-aware routing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


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
    def __init__(self, max_wait: float = 0.25):
        self.max_wait = max_wait
        self._cv = threading.Condition()
        self._local = threading.local()
        self._workers = 0
        self._waiting = 0
        self._flushing = False
        self._last_flush = 0.0
        self._pending: dict[BatchEngine, list[_Call]] = {}
        self._in_flight: dict[BatchEngine, int] = {}
        self.batches = 0  # engine calls made (for tests and benchmarks)
        self.batched_requests = 0

    def reserve(self, n: int) -> None:
        """Count `n` workers before their threads start (each then enters `worker(reserved=True)`), so
        that the first round waits for all of them."""
        with self._cv:
            self._workers += n

    @contextmanager
    def worker(self, reserved: bool = False) -> Iterator[None]:
        """Register the calling thread as a worker for the duration of the block (re-entrant)."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0 and not reserved:
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

    @contextmanager
    def elsewhere(self) -> Iterator[None]:
        """A worker blocked on something other than a batched call (another engine's lock, an HTTP
        request) counts as waiting, so that the others need not wait `max_wait` for it."""
        if not getattr(self._local, "depth", 0):
            yield
            return
        with self._cv:
            self._waiting += 1
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self._waiting -= 1

    def is_worker(self) -> bool:
        """Whether the calling thread is a registered worker (a solve side by side with others)."""
        return getattr(self._local, "depth", 0) > 0

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
            self._waiting += 1  # workers with a call not yet answered
            self._cv.notify_all()
            while not c.done:
                # max_wait counts from the call or the end of the last batch, whichever is later, so
                # that calls made during a long batch wait for the workers that batch releases
                since = time.perf_counter() - max(c.t0, self._last_flush)
                ready = self._waiting >= self._workers or since >= self.max_wait
                if ready and not self._flushing and not c.taken:
                    work = self._take()
                    self._cv.release()
                    try:
                        self._flush(work)
                    finally:
                        self._cv.acquire()
                        self._flushing = False
                        self._last_flush = time.perf_counter()
                        for eng, calls in work:
                            self._in_flight[eng] -= len(calls)
                        self._cv.notify_all()
                    continue
                self._cv.wait(timeout=self.max_wait / 4)
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
            t0 = time.perf_counter()
            try:
                results = eng.run_batch([c.request for c in calls])
            except Exception as e:  # noqa: BLE001 - handed to every caller of the batch
                results = [e] * len(calls)
            log.debug("batch of %d calls on %s: %.3fs", len(calls), getattr(eng, "name", eng),
                      time.perf_counter() - t0)
            self.batches += 1
            self.batched_requests += len(calls)
            with self._cv:
                for c, r in zip(calls, results):
                    c.result, c.done = r, True
                self._waiting -= len(calls)
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


def for_each(fn: Callable[[Any], Any], items: Sequence[Any], width: int) -> None:
    """fn(item) for every item: in this thread, in order, when `width` is 1; else `width` at a time in
    `run_threads`, raising the first item's exception after all of them finished."""
    if width == 1:
        for item in items:
            fn(item)
        return
    for r in run_threads(fn, items, width):
        if isinstance(r, BaseException):
            raise r


def run_threads(fn: Callable[[Any], Any], items: Sequence[Any], width: int) -> list[Any]:
    """fn(item) for every item, `width` threads at a time, each a worker of LOCKSTEP; results in order.
    An exception is returned in place of its item's result."""
    items = list(items)
    results: list[Any] = [None] * len(items)
    todo = iter(range(len(items)))
    take = threading.Lock()
    n = max(1, min(width, len(items)))

    def loop() -> None:
        with LOCKSTEP.worker(reserved=True):
            while True:
                with take:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = fn(items[i])
                except Exception as e:  # noqa: BLE001 - reported per item
                    results[i] = e

    LOCKSTEP.reserve(n)
    threads = [threading.Thread(target=loop, name=f"specstep-{k}", daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
