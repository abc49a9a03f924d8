"""Sessions over token ids whose KV cache the engine keeps in this process (transformers, llama.cpp).

Token ids that are known but not yet run through the model ("pending": the last sampled token, appended
text) are fed together in the next forward, so no call runs a token twice. Rolling back crops the KV and
keeps the next-token logits remembered at that point, so a rollback to a mark needs no forward pass. An
engine implements two hooks: a forward pass after the cached prefix, and a crop of the KV.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

import torch

from reasoning.backends.base import Generation, Sampling, Scored, Switch, Unbranched, Usage, usage


class TokenEngine(Protocol):
    """What a `KVSession` reads off its engine."""

    name: str
    n_params: int
    eos_ids: set[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def find_stop(text: str, stop: Sequence[str], since: int) -> tuple[int, str] | None:
    """The earliest stop string in `text` as (position, stop string), or None. `since` is the length the
    text had when it was last searched without a match: only its tail from the longest stop string's
    length before that point is searched again, so a search after every new token is not quadratic."""
    lo = max(0, since - max((len(s) for s in stop), default=0))
    hits = [(i, s) for i, s in ((text.find(s, lo), s) for s in stop) if i >= 0]
    return min(hits) if hits else None


class KVSession(Unbranched):
    def __init__(self, backend: TokenEngine, prompt_ids: list[int]):
        self.backend = backend
        self.ids: list[int] = list(prompt_ids)
        self.n_prompt = len(prompt_ids)
        self._kv_len = 0
        self._logits: torch.Tensor | None = None  # next-token logits after ids[:_kv_len]
        self._saved: tuple[int, torch.Tensor] | None = None

    # --- state -------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def token_ids(self) -> list[int]:
        return list(self.ids)

    @property
    def text(self) -> str:
        return self.backend.decode(self.ids[self.n_prompt:])

    def close(self) -> None:
        self._logits = self._saved = None

    # --- the engine's hooks ------------------------------------------------------------------
    def _model_forward(self, ids: list[int], all_logits: bool) -> torch.Tensor:
        """Run `ids` after the first `_kv_len` tokens; logits [len(ids) or 1, vocab]."""
        raise NotImplementedError

    def _model_crop(self, n: int) -> None:
        """Drop the KV of every token after the first `n`."""
        raise NotImplementedError

    def _take_refed(self) -> int:
        """Tokens the engine ran again for this session since the last call (input tokens of this call)."""
        return 0

    # --- model calls -------------------------------------------------------------------------
    def _forward(self, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Run `ids` after the cached prefix; returns logits [len(ids) or 1, vocab] (float32)."""
        logits = self._model_forward(ids, all_logits).float()
        self._kv_len += len(ids)
        self._logits = logits[-1]
        return logits

    def _crop_kv(self, n: int) -> None:
        if self._kv_len > n:
            self._model_crop(n)
            self._kv_len = n
            if self._saved is not None and self._saved[0] > n:
                self._saved = None
            # the KV below n is unchanged, so logits remembered at n are still right
            self._logits = self._saved[1] if self._saved is not None and self._saved[0] == n else None

    def _remember(self) -> None:
        """Keep the current next-token logits, so a rollback to here needs no forward pass."""
        if self._logits is not None and self._kv_len == len(self.ids):
            self._saved = (self._kv_len, self._logits)

    def _pend_last_without_logits(self) -> None:
        """When the KV holds every id but their next-token logits are lost (a rollback to a point with
        none remembered), make the last id pending again: the next forward re-runs it and gives them."""
        if self._kv_len == len(self.ids) and self._logits is None:
            self._crop_kv(len(self.ids) - 1)

    def _next_logits(self) -> tuple[torch.Tensor, int]:
        """Logits for the token after ids; feeds pending ids. Returns (logits, tokens fed)."""
        self._pend_last_without_logits()
        pending = self.ids[self._kv_len:]
        if pending:
            self._forward(pending)
        return self._logits, len(pending)

    # --- protocol ----------------------------------------------------------------------------
    def append(self, text: str) -> Usage:
        t0 = time.perf_counter()
        new = self.backend.encode(text)
        self._remember()
        self.ids.extend(new)
        # Fed (and counted as input tokens) by the next call that needs the model's output.
        return Usage(seconds=time.perf_counter() - t0)

    def append_tokens(self, ids: Sequence[int]) -> None:
        self.ids.extend(int(i) for i in ids)

    def append_ids(self, ids: Sequence[int]) -> Usage:
        """Append token ids as they are (text another session of the same vocabulary wrote): fed, like
        appended text, by the next call that needs the model's output."""
        self._remember()
        self.append_tokens(ids)
        return Usage()

    can_switch = True  # generate takes `switch`

    @torch.inference_mode()
    def generate(self, *, max_tokens: int, stop: Sequence[str] = (), temperature: float = 0.0,
                 seed: int | None = None, ignore_eos: bool = False, switch: Switch | None = None,
                 sampling: Sampling | None = None) -> Generation:
        t0 = time.perf_counter()
        logits, fed = self._next_logits()
        prefill = time.perf_counter() - t0
        self._remember()
        d = Decoding(self, max_tokens, stop, temperature, seed, ignore_eos, switch, sampling)
        tok = d.take(logits)
        while tok is not None:
            tok = d.take(self._forward([tok])[-1])
        return d.result(fed, time.perf_counter() - t0, prefill)

    def _cut_inside_token(self, start: int, out: list[int], lps: list[float], ents: list[float], text: str,
                          cut: int) -> tuple[list[int], list[float], list[float], str]:
        """The stop string ended inside a token (at `cut`): keep whole tokens up to it, re-encode the
        rest; the session (whose generation began at `start`) holds exactly the text up to `cut`."""
        b = self.backend
        keep = len(out)
        while keep and not text[:cut].startswith(b.decode(out[:keep])):
            keep -= 1
        head = b.decode(out[:keep])
        self.rollback(start + keep)
        rest = b.encode(text[len(head):cut])
        self.ids.extend(rest)
        return out[:keep] + rest, lps[:keep], ents[:keep], text[:cut]

    @torch.inference_mode()
    def score(self, text: str) -> Scored:
        t0 = time.perf_counter()
        new = self.backend.encode(text)
        if not new:
            return Scored([], [], Usage(seconds=time.perf_counter() - t0))
        self._pend_last_without_logits()
        pending = self.ids[self._kv_len:]
        first = self._logits if not pending else None
        self.ids.extend(new)
        logits = self._forward(pending + new, all_logits=True)
        pred = logits[len(pending) - 1: len(pending) - 1 + len(new)] if pending else torch.cat(
            [first[None], logits[: len(new) - 1]])
        lp = torch.log_softmax(pred, dim=-1).gather(1, torch.tensor(new)[:, None])[:, 0]
        return Scored(new, lp.tolist(), usage(self.backend.n_params, len(pending) + len(new) + self._take_refed(),
                                              seconds=time.perf_counter() - t0))

    @torch.inference_mode()
    def next_token_logprobs(self, candidates: Sequence[str]) -> tuple[dict[str, float], Usage]:
        t0 = time.perf_counter()
        ids = []
        for c in candidates:
            enc = self.backend.encode(c)
            if len(enc) != 1:
                raise ValueError(f"candidate {c!r} is {len(enc)} tokens for {self.backend.name}, not one")
            ids.append(enc[0])
        logits, fed = self._next_logits()
        logp = torch.log_softmax(logits, dim=-1)
        return ({c: float(logp[i]) for c, i in zip(candidates, ids)},
                usage(self.backend.n_params, fed + self._take_refed(), seconds=time.perf_counter() - t0))

    @torch.inference_mode()
    def next_token_top(self) -> tuple[str, float, Usage]:
        t0 = time.perf_counter()
        logits, fed = self._next_logits()
        logp = torch.log_softmax(logits, dim=-1)
        i = int(torch.argmax(logp))
        return (self.backend.decode([i]), float(logp[i]),
                usage(self.backend.n_params, fed + self._take_refed(), seconds=time.perf_counter() - t0))

    @torch.inference_mode()
    def prefill(self) -> Usage:
        """Run now the ids the KV cache lacks (a catch-up), so that sessions forked from here share them;
        the usage of that forward pass."""
        t0 = time.perf_counter()
        _, fed = self._next_logits()
        self._remember()
        u = usage(self.backend.n_params, fed + self._take_refed(), seconds=time.perf_counter() - t0)
        u.prefill_seconds = u.seconds
        return u

    def rollback(self, n_tokens: int) -> None:
        if not 0 < n_tokens <= len(self.ids):
            raise ValueError(f"cannot roll back to {n_tokens} tokens: session has {len(self.ids)}")
        del self.ids[n_tokens:]
        self._crop_kv(n_tokens)


def filtered(z: torch.Tensor, f: Sampling) -> torch.Tensor:
    """Tempered logits with the tokens the filters remove set to -inf (the likeliest token always stays)."""
    z = z.clone()
    if 0 < f.top_k < z.shape[-1]:
        z[z < torch.topk(z, f.top_k).values[-1]] = -math.inf
    if f.top_p < 1.0:
        order = torch.argsort(z, descending=True)
        p = torch.softmax(z[order], dim=-1)
        z[order[(torch.cumsum(p, -1) - p) >= f.top_p]] = -math.inf  # those after the mass reached top_p
    if f.min_p > 0.0:
        p = torch.softmax(z, dim=-1)
        z[p < f.min_p * p.max()] = -math.inf
    return z


class Decoding:
    """One generation's sampling loop over a session: `take` samples a token from the next-token
    logits, appends it to the session's ids and checks end of sequence, stop strings and length; the
    caller runs the token it returns (one session alone, or many sessions in one batch) and passes the
    logits back, until `take` returns None. `result` builds the `Generation`."""

    def __init__(self, session: KVSession, max_tokens: int, stop: Sequence[str], temperature: float,
                 seed: int | None, ignore_eos: bool, switch: Switch | None = None, sampling: Sampling | None = None):
        self.s, self.max_tokens, self.stop, self.switch = session, max_tokens, stop, switch
        self.sampling = None if sampling is None or sampling.off else sampling
        self.temperature, self.ignore_eos = temperature, ignore_eos
        self.gen = torch.Generator().manual_seed(seed) if (temperature > 0 and seed is not None) else None
        self.start = len(session.ids)
        self.out: list[int] = []
        self.lps: list[float] = []
        self.ents: list[float] = []
        self.finish, self.matched, self.cut, self.text = "length", None, None, ""
        longest = max((len(x) for x in stop), default=0)
        # the step's text before this generation, as far back as a stop string can reach
        self.lead = switch.lead[max(0, len(switch.lead) - longest + 1):] if switch is not None and longest > 1 else ""
        self.done = max_tokens <= 0

    def take(self, logits: torch.Tensor) -> int | None:
        """Sample after `logits`; the token the model must run next, or None when the generation ended."""
        if self.done:
            return None
        b = self.s.backend
        logp = torch.log_softmax(logits, dim=-1)
        if self.temperature > 0:
            z = logits / self.temperature
            probs = torch.softmax(z if self.sampling is None else filtered(z, self.sampling), dim=-1)
            tok = int(torch.multinomial(probs, 1, generator=self.gen))
        else:
            tok = int(torch.argmax(logits))
        self.done = True
        if tok in b.eos_ids and not self.ignore_eos:
            self.finish = "eos"
            return None
        self.out.append(tok)
        self.lps.append(float(logp[tok]))
        self.ents.append(float(-(logp.exp() * logp).sum()))
        self.s.ids.append(tok)
        if self.stop:  # without stop strings the text is decoded once, at the end
            prev, self.text = len(self.text), b.decode(self.out)
            hit = find_stop(self.lead + self.text, self.stop, len(self.lead) + prev)
            if hit is not None:
                self.cut, self.matched = hit[0] + len(hit[1]) - len(self.lead), hit[1]
                self.finish = "stop"
                return None
        if self.switch is not None and self.switch.met(self.ents[-1], logp.shape[-1]):
            self.finish = "switch"
            return None
        if len(self.out) >= self.max_tokens:
            return None
        self.done = False
        return tok

    def result(self, fed: int, seconds: float, prefill: float) -> Generation:
        """The generation, with `fed` input tokens run before decoding began."""
        s, out, lps, ents, text = self.s, self.out, self.lps, self.ents, self.text
        if not self.stop:
            text = s.backend.decode(out)
        sampled = len(lps) + (self.finish == "eos")
        if self.cut is not None and self.cut < len(text):
            out, lps, ents, text = s._cut_inside_token(self.start, out, lps, ents, text, self.cut)
        u = usage(s.backend.n_params, fed + s._take_refed(), sampled, seconds)
        u.prefill_seconds = prefill
        return Generation(text, out, lps, ents, self.finish, self.matched, u)
