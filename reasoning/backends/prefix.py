"""Sessions for engines that keep no per-session state but cache prompt prefixes (vLLM, OpenAI-compatible
servers): every call sends the whole context, and the engine's prefix cache makes the repeated part cheap.

A session is a list of text pieces with their token counts; `rollback` pops pieces back to a length
the session had before (the controller and judges only roll back to marks they read off `n_tokens`),
or, where pieces carry token ids, to any length, cutting a piece at a token.
A session given prompt ids (vLLM; an OpenAI-compatible server with `token_prompts=1`) sends the
context as token ids, each piece as it was written or encoded alone, so it is never re-tokenized.
Input tokens are counted as in the transformers backend: the tokens the engine has not yet seen from
this session; the engine's own cache statistics say how many it actually recomputed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from reasoning.backends.base import Generation, Sampling, Scored, Unbranched, Usage, usage
from reasoning.batching import LOCKSTEP
from reasoning.prompts import Prompt


@dataclass(slots=True)
class Completion:
    """One generation from an engine. `text` ends with the stop string when one matched."""

    text: str
    n_tokens: int  # tokens of `text` (the stop string's included)
    logprobs: list[float]
    entropies: list[float]
    finish_reason: str  # "stop" | "length" | "eos"
    stop: str | None
    token_ids: list[int] = field(default_factory=list)


class PrefixEngine(Protocol):
    """What a stateless engine offers a `PrefixSession`; `prompt` is the full context, as text or (where
    the session was given prompt ids) as token ids, `images` the prompt's images (PIL), sent with every
    call. An engine that takes token ids also has `encode` and `decode`."""

    def count_tokens(self, text: str) -> int: ...

    def complete(self, prompt: str | list[int], *, max_tokens: int, stop: Sequence[str], temperature: float,
                 seed: int | None, ignore_eos: bool, images: tuple = (),
                 sampling: Sampling | None = None) -> Completion: ...

    def continuation_logprobs(self, prompt: str | list[int], continuation: str,
                              images: tuple = ()) -> tuple[list[int], list[float]]: ...

    def candidate_logprobs(self, prompt: str | list[int], candidates: Sequence[str],
                           images: tuple = ()) -> dict[str, float]: ...

    def top_token(self, prompt: str | list[int], images: tuple = ()) -> tuple[str, float]: ...

    # optional: `complete_n(prompt, n, *, seed, ...)`, n samples from one prompt in one request, sample k
    # seeded `seed + k` (vLLM's rule for n > 1); `concurrent`, true where calls may overlap (from several
    # threads), the engine batching them; see `generate_many`


def entropy_from_top(logprobs: Sequence[float]) -> float:
    """Entropy of the top-k part of a distribution (a lower bound of the full entropy)."""
    return -sum(math.exp(lp) * lp for lp in logprobs if lp > -math.inf)


class PrefixSession(Unbranched):
    def __init__(self, engine: PrefixEngine, prompt_text: str, n_prompt: int, images: tuple = (),
                 prompt_ids: list[int] | None = None):
        self.engine = engine
        self.prompt_text = prompt_text
        self.n_prompt = n_prompt if prompt_ids is None else len(prompt_ids)
        self.prompt_ids = prompt_ids  # set where the engine takes token prompts: pieces then carry ids
        self.images = tuple(images)
        self.pieces: list[tuple[str, int, tuple[int, ...] | None]] = []
        self._seen = 0  # tokens of this session the engine has processed

    @property
    def n_tokens(self) -> int:
        return self.n_prompt + sum(n for _, n, _ in self.pieces)

    @property
    def text(self) -> str:
        return "".join(t for t, _, _ in self.pieces)

    @property
    def token_ids(self) -> list[int] | None:
        """The context's token ids, where the engine takes token prompts (else None)."""
        if self.prompt_ids is None:
            return None
        return self.prompt_ids + [i for _, _, ids in self.pieces for i in ids]

    def context(self) -> str | list[int]:
        """What the engine reads: the token ids where it takes them, else the text."""
        ids = self.token_ids
        return self.prompt_text + self.text if ids is None else ids

    def _add(self, text: str, ids: Sequence[int] | None = None, n: int | None = None) -> None:
        if self.prompt_ids is not None:
            ids = tuple(self.engine.encode(text) if ids is None else ids)
            self.pieces.append((text, len(ids), ids))
        else:
            self.pieces.append((text, self.engine.count_tokens(text) if n is None else n, None))

    @property
    def _params(self) -> int:
        """The engine's parameter count for FLOPs estimates (0 when unknown)."""
        return int(getattr(self.engine, "n_params", 0) or 0)

    def _fed(self) -> int:
        return max(0, self.n_tokens - self._seen)

    def append(self, text: str) -> Usage:
        t0 = time.perf_counter()
        if text:
            self._add(text)
        return Usage(seconds=time.perf_counter() - t0)

    def append_ids(self, ids: Sequence[int]) -> Usage:
        """Append token ids: as they are where the engine takes token prompts, else as their text (which
        the engine encodes again)."""
        t0 = time.perf_counter()
        if ids:
            self._add(self.engine.decode(list(ids)), ids if self.prompt_ids is not None else None)
        return Usage(seconds=time.perf_counter() - t0)

    can_fork = True  # a fork is a copy of the context: `generate_many` sends forks together

    def fork(self) -> PrefixSession:
        """A session with this one's context, to write after it apart (the engine's cache is shared)."""
        f = copy.copy(self)
        f.pieces = list(self.pieces)
        return f

    def prefill(self) -> Usage:
        """Count the context the engine has not read yet as read now (the next call reads it once for
        every fork taken after this, from the engine's prefix cache)."""
        fed = self._fed()
        self._seen = self.n_tokens
        return usage(self._params, fed)

    def _request(self, max_tokens: int, stop: Sequence[str] = (), temperature: float = 0.0, ignore_eos: bool = False,
                 sampling: Sampling | None = None) -> dict[str, Any]:
        """A call's options for the engine (all but the seed)."""
        more = {} if sampling is None or sampling.off else {"sampling": sampling}
        return dict(max_tokens=max_tokens, stop=list(stop), temperature=temperature, ignore_eos=ignore_eos,
                    images=self.images, **more)

    def _written(self, c: Completion, fed: int, seconds: float) -> Generation:
        """The generation of completion `c` from this session's context, appended to it."""
        if c.text:
            self._add(c.text, c.token_ids if len(c.token_ids) == c.n_tokens else None, c.n_tokens)
        self._seen = self.n_tokens
        ids = c.token_ids if len(c.token_ids) == c.n_tokens else list(range(c.n_tokens))
        sampled = len(c.logprobs) + (c.finish_reason == "eos")
        return Generation(c.text, ids, c.logprobs, c.entropies, c.finish_reason, c.stop,
                          usage(self._params, fed, sampled, seconds))

    def generate(self, *, max_tokens: int, stop: Sequence[str] = (), temperature: float = 0.0,
                 seed: int | None = None, ignore_eos: bool = False, sampling: Sampling | None = None) -> Generation:
        t0 = time.perf_counter()
        fed = self._fed()
        c = self.engine.complete(self.context(), seed=seed,
                                 **self._request(max_tokens, stop, temperature, ignore_eos, sampling))
        return self._written(c, fed, time.perf_counter() - t0)

    def score(self, text: str) -> Scored:
        t0 = time.perf_counter()
        if not text:
            return Scored([], [], Usage(seconds=time.perf_counter() - t0))
        fed_before = self._fed()
        ids, lps = self.engine.continuation_logprobs(self.context(), text, images=self.images)
        self._add(text, ids, len(ids))
        self._seen = self.n_tokens
        return Scored(ids, lps, usage(self._params, fed_before + len(ids), seconds=time.perf_counter() - t0))

    def next_token_logprobs(self, candidates: Sequence[str]) -> tuple[dict[str, float], Usage]:
        t0 = time.perf_counter()
        fed = self._fed()
        out = self.engine.candidate_logprobs(self.context(), candidates, images=self.images)
        self._seen = self.n_tokens
        return out, usage(self._params, fed, seconds=time.perf_counter() - t0)

    def next_token_top(self) -> tuple[str, float, Usage]:
        t0 = time.perf_counter()
        fed = self._fed()
        token, lp = self.engine.top_token(self.context(), images=self.images)
        self._seen = self.n_tokens
        return token, lp, usage(self._params, fed, seconds=time.perf_counter() - t0)

    def rollback(self, n_tokens: int) -> None:
        if not self.n_prompt <= n_tokens <= self.n_tokens:
            raise ValueError(f"cannot roll back to {n_tokens} tokens: session has {self.n_tokens}")
        while self.n_tokens > n_tokens:
            text, n, ids = self.pieces[-1]
            keep = n_tokens - (self.n_tokens - n)
            if keep <= 0:
                self.pieces.pop()
            elif ids is not None:  # a piece with its ids is cut at a token
                self.pieces[-1] = (self.engine.decode(list(ids[:keep])), keep, ids[:keep])
            else:
                break
        if self.n_tokens != n_tokens:
            raise ValueError(f"cannot roll back to {n_tokens} tokens: not a length this session had "
                             f"(it has {self.n_tokens} after dropping whole pieces)")
        self._seen = min(self._seen, n_tokens)

    def close(self) -> None:
        self.pieces.clear()


def generate_many(requests: Sequence[tuple[PrefixSession, dict[str, Any]]]) -> list[Generation]:
    """`session.generate(**kw)` for each request, in order. Runs of requests that read the same context
    with the same options, seeded s, s+1, ... (or all unseeded), go to an engine with `complete_n` as one
    request for n samples, the sample k seeded s + k as vLLM seeds them: K samples after one prefix are
    one request, their prefix read once. Each such row's seconds are the call's, split evenly. Where every
    engine takes overlapping calls (`concurrent`: servers, vLLM's async engine), the requests go out side
    by side, so that the engine batches them (lookahead's steps at k prefixes); else one after another."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(requests):
        session, kw = requests[i]
        j = i + 1
        if getattr(session.engine, "complete_n", None) is not None and (kw.get("temperature") or 0.0) > 0:
            key, seed = _same(session, kw), kw.get("seed")
            while j < len(requests) and _same(*requests[j]) == key and requests[j][1].get("seed") == (
                    None if seed is None else seed + j - i):
                j += 1
        runs.append((i, j))
        i = j

    def run(span: tuple[int, int]) -> list[Generation]:
        i, j = span
        session, kw = requests[i]
        if j - i == 1:
            return [session.generate(**kw)]
        t0 = time.perf_counter()
        fed = [s._fed() for s, _ in requests[i:j]]
        cs = session.engine.complete_n(session.context(), j - i, seed=kw.get("seed"),
                                       **session._request(**{k: v for k, v in kw.items() if k != "seed"}))
        seconds = (time.perf_counter() - t0) / (j - i)
        return [s._written(c, f, seconds) for (s, _), c, f in zip(requests[i:j], cs, fed)]

    if len(runs) > 1 and all(getattr(s.engine, "concurrent", False) for s, _ in requests):
        with ThreadPoolExecutor(len(runs)) as pool, LOCKSTEP.elsewhere():
            parts = list(pool.map(run, runs))
    else:
        parts = [run(span) for span in runs]
    return [g for part in parts for g in part]


def _same(session: PrefixSession, kw: dict[str, Any]) -> tuple:
    """What must be equal for two requests to be one request for several samples (forks of one session
    share their prompt and pieces, so comparing them is cheap)."""
    return (id(session.engine), session.prompt_text, session.images, tuple(session.pieces),
            tuple(sorted((k, repr(v)) for k, v in kw.items() if k != "seed")))


def render_prompt(prompt: Prompt, tokenizer, chat: bool) -> str:
    """A prompt as text: the tokenizer's chat template when `chat`, else the plain Question/Answer form."""
    if chat:
        return tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True) + \
            prompt.prefix
    return prompt.plain()
