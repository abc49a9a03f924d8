"""The Backend protocol: a model engine that opens *sessions*.

A session is one growing context (prompt + solution so far) whose KV cache the engine keeps.
Every call processes only the tokens that are new to the session, and `rollback` crops the
cache, so the cost of a step does not grow with the length of the solution.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from reasoning.metrics import Usage, usage  # noqa: F401 (re-exported)
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec
from reasoning.types import TokenStats

# The solve under way in this thread: a random id the controller sets for each solve. A backend that
# sends requests through a router names it, so that a solve's requests (all its sessions on that
# model) share one replica and its prefix cache.
SOLVE_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("specstep_solve_key", default=None)


def params_in_dir(path) -> int:
    """Parameters stored in a transformers directory's safetensors files (headers only; 0 if none)."""
    import json
    import struct
    from pathlib import Path

    total = 0
    for f in Path(path).glob("*.safetensors"):
        with f.open("rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                total += math.prod(t["shape"])
    return total


def tokenizer_key(tokenizer) -> str:
    """A key equal for two transformers tokenizers exactly when they map text to the same token ids (their
    models' sessions can then take each other's ids)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return "hf:" + hashlib.sha256(json.dumps([vocab, tokenizer.all_special_tokens]).encode()).hexdigest()


def count_params(model) -> int:
    """Parameters a forward pass multiplies by: all of them, less an untied input embedding (a lookup)."""
    total = sum(p.numel() for p in model.parameters())
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is not None and head is not None and emb.weight.data_ptr() != head.weight.data_ptr():
        total -= emb.weight.numel()
    return int(total)


@dataclass(frozen=True)
class Switch:
    """End a generation after the first token whose next-token entropy (nats; `normalized`: over
    log(vocabulary size)) is above `tau` (`above`) or at most `tau` (not `above`): finish reason "switch".
    `lead`: the text of the step written before this generation (by either model), so that a stop string
    begun there and completed here ends the generation."""

    tau: float
    above: bool = True
    normalized: bool = False
    lead: str = ""

    def met(self, entropy: float, vocab: int) -> bool:
        h = entropy / math.log(vocab) if self.normalized else entropy
        return h > self.tau if self.above else h <= self.tau


@dataclass(frozen=True)
class Sampling:
    """Filters on the tempered next-token distribution when sampling (temperature > 0; greedy decoding
    ignores them), applied in this order: the `top_k` likeliest tokens (0: all), the smallest set of them
    whose probability reaches `top_p` (1: all), those whose probability is at least `min_p` times the
    likeliest one's (0: all)."""

    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 < self.top_p <= 1.0 and self.top_k >= 0 and 0.0 <= self.min_p <= 1.0):
            raise ValueError(f"sampling filters out of range: top_p in (0, 1], top_k >= 0, min_p in [0, 1]; got {self}")

    @property
    def off(self) -> bool:
        return self.top_p >= 1.0 and self.top_k == 0 and self.min_p == 0.0

    def fields(self) -> dict[str, float | int]:
        """The filters that are on, by their usual names (OpenAI-compatible servers, vLLM)."""
        on = {"top_p": self.top_p < 1.0, "top_k": self.top_k > 0, "min_p": self.min_p > 0.0}
        return {k: getattr(self, k) for k, v in on.items() if v}


@dataclass(slots=True)
class Generation:
    """Text a session generated. `text` ends with the stop string when one matched; the session
    then holds exactly that text (later tokens are cropped)."""

    text: str
    token_ids: list[int]
    logprobs: list[float]  # log p(token) under the untempered model distribution
    entropies: list[float]
    finish_reason: str  # "stop" | "length" | "eos" | "switch" (see `Switch`)
    stop: str | None
    usage: Usage = field(default_factory=Usage)

    def stats(self) -> TokenStats | None:
        if not self.logprobs:
            return None
        return TokenStats(
            n_tokens=len(self.logprobs),
            mean_logprob=sum(self.logprobs) / len(self.logprobs),
            min_logprob=min(self.logprobs),
            last_logprob=self.logprobs[-1],
            mean_entropy=sum(self.entropies) / len(self.entropies) if self.entropies else math.nan,
        )


def joined(head: Generation, rest: Generation) -> Generation:
    """One generation: `head`'s tokens, then `rest`'s, which ends it (its finish, stop and usage)."""
    return Generation(head.text + rest.text, head.token_ids + rest.token_ids, head.logprobs + rest.logprobs,
                      head.entropies + rest.entropies, rest.finish_reason, rest.stop, rest.usage)


@dataclass(slots=True)
class Scored:
    """Per-token log-probabilities of a continuation that was appended to a session."""

    token_ids: list[int]
    logprobs: list[float]
    usage: Usage = field(default_factory=Usage)


class Turns:
    """A lock that sessions of one model take turns on, and how many want it now (the load signal)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        from reasoning.batching import LOCKSTEP

        with self._count:
            self.waiting += 1
        try:
            with LOCKSTEP.elsewhere(), self._lock:
                yield
        finally:
            with self._count:
                self.waiting -= 1

    @contextmanager
    def held(self) -> Iterator[None]:
        """The lock alone, not counted in `waiting` (the decoding thread of reasoning.backends.hf_batch,
        whose rows the backend's load counts itself)."""
        with self._lock:
            yield


def chat_turn_markers(template) -> tuple[str, str]:
    """(end of assistant turn + start of user turn, end of user turn + start of assistant turn), read off
    what `template.apply_chat_template` (a tokenizer's, a processor's) renders around three messages."""
    msgs = [{"role": "user", "content": "\x01"}, {"role": "assistant", "content": "\x02"},
            {"role": "user", "content": "\x03"}]
    t = template.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    a, u = t.index("\x02") + 1, t.index("\x03")
    return t[a:u], t[u + 1:]


class Unbranched:
    """The branch part of `Session` for sessions that read one branch of the text at a time."""

    @property
    def can_branch(self) -> bool:
        return False

    def branch_logprobs(self, pieces: Sequence[str], suffix: str,
                        candidates: Sequence[str]) -> tuple[list[dict[str, float]], Usage]:
        raise NotImplementedError(f"{type(self).__name__} reads one branch at a time (can_branch is False)")


@runtime_checkable
class Session(Protocol):
    @property
    def n_tokens(self) -> int: ...

    @property
    def text(self) -> str:
        """Everything appended or generated after the prompt."""
        ...

    def append(self, text: str) -> Usage: ...

    def generate(
        self,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int | None = None,
        ignore_eos: bool = False,
        sampling: Sampling | None = None,
    ) -> Generation: ...

    def score(self, text: str) -> Scored:
        """Append `text` and return the log-probability of each of its tokens."""
        ...

    def next_token_logprobs(self, candidates: Sequence[str]) -> tuple[dict[str, float], Usage]:
        """Log-probability that the next token is each candidate (each must be a single token)."""
        ...

    def next_token_top(self) -> tuple[str, float, Usage]:
        """The most likely next token over the whole vocabulary, and its log-probability."""
        ...

    @property
    def can_branch(self) -> bool:
        """Whether `branch_logprobs` works here. Where it does not, a caller reads each branch in turn
        with `append`, `next_token_logprobs` and `rollback`."""
        ...

    def branch_logprobs(self, pieces: Sequence[str], suffix: str,
                        candidates: Sequence[str]) -> tuple[list[dict[str, float]], Usage]:
        """For each j, the log-probability of each candidate next token after this session's text +
        pieces[0..j] + `suffix`, in one forward pass; the session is left as it was. Only where
        `can_branch`."""
        ...

    def rollback(self, n_tokens: int) -> None:
        """Forget everything after the first `n_tokens` tokens (prompt included)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A model behind an engine. Optional: `vocab_key` (a string equal for two backends exactly when they
    map text to the same token ids), with `encode`, `decode` and sessions that have `append_ids` and
    `token_ids`: the loop then catches a session up with the token ids each step's author wrote."""

    spec: ModelSpec

    @property
    def name(self) -> str: ...

    def open_session(self, prompt: Prompt) -> Session: ...

    def count_tokens(self, text: str) -> int: ...

    def turn_markers(self) -> tuple[str, str] | None:
        """Text that closes the assistant turn and opens a user turn, and text that closes it and
        opens the assistant turn again (for judge prompts); None when the model has no chat format."""
        ...

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it (chat template or plain format)."""
        ...
