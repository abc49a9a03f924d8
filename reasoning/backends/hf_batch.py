"""Batched decoding for transformers sessions: generations of many sessions in one decode loop.

Solves side by side (`solve_many`, the server, the benchmarks) send their transformers `generate` calls
through the lockstep scheduler (reasoning.batching); `generate_batch` then runs them together. Each
session first catches up alone (prefill is about as fast per token alone as in a batch on a CPU); then
their KV caches are stacked, left-padded to one length with the padding masked out, and every decode
step is one forward pass over all rows that are still writing (decoding, not prefill, is what a batch
makes cheaper: one pass reads the weights once for every row). A row that ends hands its KV back to
its session at once, without the padding, and leaves the batch. Each row samples with the same
`Decoding` as a session alone, so stop strings, end of sequence, seeds and the usage mean the same;
greedy ids equal a lone session's up to floating-point rounding in a batched matrix multiply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from reasoning.backends.base import Generation
from reasoning.backends.kv import Decoding

if TYPE_CHECKING:
    from reasoning.backends.hf import HFBackend, HFSession


def _stack(sessions: Sequence[HFSession]) -> tuple[Any, torch.Tensor, list[int]]:
    """The sessions' KV caches as one left-padded batch: (cache, attention mask, left pads)."""
    from transformers import DynamicCache

    lens = [s._kv_len for s in sessions]
    width = max(lens)
    pads = [width - n for n in lens]
    cache = DynamicCache()
    for li, layer in enumerate(sessions[0]._cache.layers):
        k0 = layer.keys
        shape = (len(sessions), k0.shape[1], width, k0.shape[3])
        keys, values = k0.new_zeros(shape), k0.new_zeros(shape)
        for r, (s, p) in enumerate(zip(sessions, pads)):
            keys[r, :, p:] = s._cache.layers[li].keys[0]
            values[r, :, p:] = s._cache.layers[li].values[0]
        cache.update(keys, values, li)
    mask = torch.ones(len(sessions), width, dtype=torch.long)
    for r, p in enumerate(pads):
        mask[r, :p] = 0
    return cache, mask, pads


def _unstack(cache: Any, row: int, pad: int, session: HFSession) -> None:
    """Give `session` its row of the batch's KV, without the padding."""
    from transformers import DynamicCache

    own = DynamicCache()
    for li, layer in enumerate(cache.layers):
        own.update(layer.keys[row: row + 1, :, pad:].clone(), layer.values[row: row + 1, :, pad:].clone(), li)
    session._cache = own


@torch.inference_mode()
def generate_batch(backend: HFBackend, requests: Sequence[tuple[HFSession, dict[str, Any]]]) -> list[Generation]:
    """One `Generation` per (session, generate keyword arguments), decoded together. Every request
    is charged the batch's wall time (what each waited) and the seconds before decoding began as its
    prefill; its input tokens are the ones its own session fed."""
    t0 = time.perf_counter()
    rows: list[Decoding] = []
    fed: list[int] = []
    toks: list[int | None] = []
    for s, kw in requests:
        logits, n = s._next_logits()
        s._remember()
        d = Decoding(s, kw["max_tokens"], kw.get("stop", ()), kw.get("temperature", 0.0), kw.get("seed"),
                     kw.get("ignore_eos", False))
        rows.append(d)
        fed.append(n)
        toks.append(d.take(logits))
    prefill = time.perf_counter() - t0
    live = [i for i, t in enumerate(toks) if t is not None]
    if live:
        sessions = [rows[i].s for i in live]
        cache, mask, pads = _stack(sessions)
        pos = torch.tensor([s._kv_len for s in sessions])
        model = backend.model
        while live:
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            with backend.turns.held():
                out = model(input_ids=torch.tensor([[toks[i]] for i in live]), attention_mask=mask,
                            position_ids=pos[:, None], use_cache=True, logits_to_keep=1,
                            **{backend._cache_kw: cache})
            logits = out.logits[:, -1].float()
            pos = pos + 1
            ended = []
            for r, i in enumerate(live):
                s = rows[i].s
                s._kv_len += 1
                s._logits = logits[r]
                toks[i] = rows[i].take(logits[r])
                if toks[i] is None:
                    _unstack(cache, r, pads[r], s)
                    ended.append(r)
            if ended:
                keep = [r for r in range(len(live)) if r not in ended]
                if not keep:
                    break
                live = [live[r] for r in keep]
                pads = [pads[r] for r in keep]
                trim = min(pads)  # columns that are padding in every row left
                cache.batch_select_indices(torch.tensor(keep))
                if trim:
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[:, :, trim:], layer.values[:, :, trim:]
                    pads = [p - trim for p in pads]
                mask = mask[keep][:, trim:]
                pos = pos[keep]
    seconds = time.perf_counter() - t0
    return [d.result(n, seconds, prefill) for d, n in zip(rows, fed)]
