"""Continuous batching for transformers sessions: generations of many solves decoded in one loop.

Solves side by side (`solve_many`, the server, the benchmarks) hand their `generate` calls to their
backend's `DecodeLoop`, a thread that decodes every generation it holds in one batch and lets
generations join and leave at every step, as vLLM's scheduler does: a solve whose step ended goes on
(routing, judging) and its next step joins the running batch, so the batch stays full instead of
waiting for its longest row. A joining session first catches up alone (prefill is about as fast per
token alone as in a batch on a CPU); its KV cache is then stacked with the others', left-padded to one
length with the padding masked out, and each decode step is one forward pass over every row (decoding
is what a batch makes cheap: one pass reads the weights once for all rows). A row that ends hands its
KV back to its session without the padding. Each row samples with the same `Decoding` as a session
alone, so stop strings, end of sequence, seeds and the usage mean the same; greedy ids equal a lone
session's up to floating-point rounding in a batched matrix multiply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from reasoning.backends.base import Generation
from reasoning.backends.kv import Decoding

if TYPE_CHECKING:
    from reasoning.backends.hf import HFBackend, HFSession

@dataclass(eq=False)
class _Job:
    session: HFSession
    kw: dict[str, Any]
    t0: float = field(default_factory=time.perf_counter)
    decoding: Decoding | None = None
    fed: int = 0
    prefill: float = 0.0
    begun: bool = False  # whether the logits before its first token were known
    result: Generation | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> int | None:
        """Begin: the token the batch must run next, or None when the generation already ended. A session
        one token behind (the last token it sampled) has that token run in the batch's next step, which
        also gives its first logits; one further behind catches up alone first and samples its first token."""
        s, kw = self.session, self.kw
        self.decoding = Decoding(s, kw["max_tokens"], kw.get("stop", ()), kw.get("temperature", 0.0),
                                 kw.get("seed"), kw.get("ignore_eos", False), kw.get("switch"),
                                 kw.get("sampling"))
        s._pend_last_without_logits()
        if len(s.ids) - s._kv_len == 1 and s._kv_len and not self.decoding.done:
            self.fed = 1
            return s.ids[-1]
        t = time.perf_counter()
        logits, self.fed = s._next_logits()
        s._remember()
        self.prefill = time.perf_counter() - t
        self.begun = True
        return self.decoding.take(logits)

    def take(self, logits: torch.Tensor) -> int | None:
        """The next token after the batch's step gave these logits (the first one: remembered, as alone)."""
        if not self.begun:
            self.begun = True
            self.session._remember()
        return self.decoding.take(logits)

    def finish(self) -> None:
        self.result = self.decoding.result(self.fed, time.perf_counter() - self.t0, self.prefill)
        self.done.set()

    def fail(self, e: BaseException) -> None:
        self.error = e
        self.done.set()


class _Batch:
    """Rows decoding together: one left-padded KV cache, its attention mask and each row's next position."""

    def __init__(self, backend: HFBackend):
        from transformers import DynamicCache

        self.backend = backend
        self.jobs: list[_Job] = []
        self.toks: list[int] = []  # each row's token to run next
        self.pads: list[int] = []
        self.cache = DynamicCache()
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=backend.device)

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: _Job, tok: int) -> None:
        """Stack the job's session KV into the batch, padding it (or every row already there) on the left."""
        s = job.session
        n, width = s._kv_len, self.mask.shape[1]
        if n > width and self.jobs:  # the newcomer is longer: pad every row already here
            grow = n - width
            for layer in self.cache.layers:
                z = layer.keys.new_zeros((*layer.keys.shape[:2], grow, layer.keys.shape[3]))
                layer.keys, layer.values = torch.cat([z, layer.keys], 2), torch.cat([z, layer.values], 2)
            self.mask = torch.cat([self.mask.new_zeros(len(self.jobs), grow), self.mask], 1)
            self.pads = [p + grow for p in self.pads]
            width = n
        width = max(width, n)
        pad = width - n
        for li, layer in enumerate(s._cache.layers):
            k, v = layer.keys, layer.values
            if pad:
                z = k.new_zeros((*k.shape[:2], pad, k.shape[3]))
                k, v = torch.cat([z, k], 2), torch.cat([z, v], 2)
            if self.jobs:
                mine = self.cache.layers[li]
                mine.keys, mine.values = torch.cat([mine.keys, k]), torch.cat([mine.values, v])
            else:
                self.cache.update(k, v, li)
        row = torch.ones(1, width, dtype=torch.long, device=self.backend.device)
        row[0, :pad] = 0
        self.mask = torch.cat([self.mask, row]) if self.jobs else row
        self.jobs.append(job)
        self.toks.append(tok)
        self.pads.append(pad)

    @torch.inference_mode()
    def step(self) -> list[_Job]:
        """Run every row's next token and sample the one after; remove and return the jobs that ended."""
        b = self.backend
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.jobs), 1)], 1)
        pos = torch.tensor([[j.session._kv_len] for j in self.jobs], device=b.device)
        with b.turns.held():
            out = b.model(input_ids=torch.tensor([[t] for t in self.toks], device=b.device), attention_mask=self.mask,
                          position_ids=pos, use_cache=True, logits_to_keep=1, **{b._cache_kw: self.cache})
        logits = out.logits[:, -1].float().cpu()
        ended = []
        for r, job in enumerate(self.jobs):
            s = job.session
            s._kv_len += 1
            s._logits = logits[r]
            tok = job.take(logits[r])
            if tok is None:
                self._give_back(r)
                ended.append(r)
            else:
                self.toks[r] = tok
        gone = [self.jobs[r] for r in ended]
        if ended:
            self._keep([r for r in range(len(self.jobs)) if r not in ended])
        return gone

    def _give_back(self, r: int) -> None:
        """Give row r's session its KV, without the padding."""
        from transformers import DynamicCache

        own, p = DynamicCache(), self.pads[r]
        for li, layer in enumerate(self.cache.layers):
            own.update(layer.keys[r: r + 1, :, p:].clone(), layer.values[r: r + 1, :, p:].clone(), li)
        self.jobs[r].session._cache = own

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows, and no column that is padding in all of them."""
        if not keep:
            self.__init__(self.backend)
            return
        self.jobs = [self.jobs[r] for r in keep]
        self.toks = [self.toks[r] for r in keep]
        self.cache.batch_select_indices(torch.tensor(keep, device=self.backend.device))
        trim = min(self.pads[r] for r in keep)
        if trim:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, trim:], layer.values[:, :, trim:]
        self.pads = [self.pads[r] - trim for r in keep]
        self.mask = self.mask[keep][:, trim:]


class DecodeLoop:
    """A backend's decoding thread: every generation handed to it (`submit`) joins one batch at the next
    step, and its caller gets its `Generation` as soon as it ends (continuous batching)."""

    def __init__(self, backend: HFBackend):
        self.backend = backend
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._rows = 0  # generations in the batch now
        self.forwards = 0  # decode steps run, and the rows they ran (for tests and benchmarks)
        self.row_steps = 0

    def load(self) -> int:
        """Generations waiting for the batch or decoding in it now."""
        with self._cv:
            return len(self._queue) + self._rows

    def submit(self, session: HFSession, kw: dict[str, Any]) -> Generation:
        """Generate on `session` in the batch; blocks until this generation ended."""
        from reasoning.batching import LOCKSTEP

        job = _Job(session, kw)
        with self._cv:
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"decode-{self.backend.name}", daemon=True)
                self._thread.start()
            self._cv.notify()
        with LOCKSTEP.elsewhere():  # a solve waiting here does not hold up a lockstep round elsewhere
            job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    @torch.inference_mode()
    def _run(self) -> None:
        batch = _Batch(self.backend)
        while True:
            with self._cv:
                while not self._queue and not len(batch):
                    self._cv.wait()
                new, self._queue = self._queue, []
                self._rows += len(new)
            for job in new:
                try:
                    tok = job.start()
                    if tok is not None:
                        batch.add(job, tok)
                        continue
                except Exception as e:  # noqa: BLE001 - handed to its caller
                    self._end(job, e)
                    continue
                self._end(job)
            if not len(batch):
                continue
            rows = list(batch.jobs)
            try:
                ended = batch.step()
            except Exception as e:  # noqa: BLE001 - a failed step fails every row in it
                for job in rows:
                    self._end(job, e)
                batch = _Batch(self.backend)
                continue
            self.forwards += 1
            self.row_steps += len(rows)
            for job in ended:
                self._end(job)

    def _end(self, job: _Job, error: BaseException | None = None) -> None:
        with self._cv:
            self._rows -= 1
        if error is None:
            try:
                job.finish()
            except Exception as e:  # noqa: BLE001 - handed to its caller; the loop goes on
                job.fail(e)
        else:
            job.fail(error)


@torch.inference_mode()
def generate_batch(backend: HFBackend, requests: Sequence[tuple[HFSession, dict[str, Any]]]) -> list[Generation]:
    """One `Generation` per (session, generate keyword arguments), decoded together in this thread."""
    jobs = [_Job(s, kw) for s, kw in requests]
    batch = _Batch(backend)
    for job in jobs:
        tok = job.start()
        if tok is None:
            job.finish()
        else:
            batch.add(job, tok)
    while len(batch):
        for job in batch.step():
            job.finish()
    return [job.result for job in jobs]
