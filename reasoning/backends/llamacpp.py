"""llama.cpp backend (llama-cpp-python): GGUF files run as they are, 5-8x faster than transformers on CPU.

Sessions are `KVSession`s (reasoning.backends.kv: pending tokens, rollback that keeps logits, stop strings
inside a token, as on transformers) with llama.cpp's two model hooks: a forward pass through its batch API,
and a crop that is free. One llama.cpp context holds one sequence; sessions sharing a model keep it as long
as they do not interleave. A session that finds the context holding another session's tokens re-feeds
the part that differs (counted as input tokens of that call), so interleaving stays correct.

Spec: ``llamacpp:ALIAS_OR_GGUF?n_ctx=4096&threads=2&n_batch=512&chat=1``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reasoning.backends.base import Turns, chat_turn_markers
from reasoning.backends.kv import KVSession
from reasoning.errors import BackendUnavailableError, ConfigError, ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec, alias_gguf, check_gguf, parse_spec

log = logging.getLogger(__name__)


def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file a llama.cpp spec names: a bundled alias or a local file."""
    inner = parse_spec(spec.model)
    if inner.alias is not None:
        path, _ = alias_gguf(inner.alias)
        return inner.alias.assemble(path) if inner.alias.assemble is not None else path
    path = Path(inner.model)
    if not (path.is_file() and path.suffix == ".gguf"):
        raise ModelSpecError(f"model spec {str(spec)!r}: llama.cpp needs a .gguf file or a bundled alias")
    return check_gguf(path)


class _Template:
    """The GGUF's chat template, rendered like transformers does (sandboxed Jinja)."""

    def __init__(self, source: str, bos: str, eos: str):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(source)
        self.bos, self.eos = bos, eos

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    bos_token=self.bos, eos_token=self.eos)


class LlamaCppBackend:
    """A GGUF model through llama-cpp-python."""

    def __init__(self, spec: ModelSpec):
        try:
            import llama_cpp
        except ImportError:
            raise BackendUnavailableError(
                f"model spec {str(spec)!r}: llama-cpp-python is not installed: "
                'CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install "specstep[llamacpp]" (compiles for about 6 minutes)'
            ) from None
        self.spec = spec
        path = gguf_path(spec)
        t0 = time.perf_counter()
        threads = int(spec.number("threads", os.cpu_count() or 1, 1, integer=True))
        n_ctx, n_batch = (int(spec.number(k, d, 1, integer=True)) for k, d in (("n_ctx", 4096), ("n_batch", 512)))
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                                       n_threads_batch=threads, logits_all=False, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise ModelSpecError(f"llama.cpp cannot load {path}: {e}") from None
        self._lib = llama_cpp
        self.n_vocab = self.llm.n_vocab()
        self.n_ctx = self.llm.n_ctx()
        self.context_length = self.n_ctx
        self.turns = Turns()  # forward passes of all sessions take turns
        self.n_params = int(self.llm._model.n_params())
        meta = self.llm.metadata
        source = meta.get("tokenizer.chat_template")
        self.chat = spec.flag("chat", bool(source))
        if self.chat and not source:
            raise ModelSpecError(f"model spec {str(spec)!r}: chat=1 but the GGUF has no chat template")
        vocab = self.llm._model.vocab
        self._bos_text = self.decode([self.llm.token_bos()]) if self.llm.token_bos() >= 0 else ""
        eos_text = self.decode([self.llm.token_eos()]) if self.llm.token_eos() >= 0 else ""
        self.template = _Template(source, self._bos_text, eos_text) if source else None
        self.eos_ids = {self.llm.token_eos()}
        for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
            ids = self.encode(t)
            if len(ids) == 1 and llama_cpp.llama_vocab_is_eog(vocab, ids[0]):
                self.eos_ids.add(ids[0])
        self.add_bos = not self.chat and self.llm.token_bos() >= 0 and \
            meta.get("tokenizer.ggml.add_bos_token", "true") != "false"
        log.info("loaded %s (%s) with llama.cpp in %.1fs", spec, path.name, time.perf_counter() - t0)

    @property
    def name(self) -> str:
        return str(self.spec)

    def load(self) -> int:
        return self.turns.waiting

    def render(self, prompt: Prompt) -> str:
        if self.chat:
            return self.template.apply_chat_template(prompt.messages(), add_generation_prompt=True) + prompt.prefix
        return prompt.plain()

    def turn_markers(self) -> tuple[str, str] | None:
        return chat_turn_markers(self.template) if self.chat else None

    @functools.cached_property
    def vocab_key(self) -> str:
        """Equal for two GGUF models exactly when their token ids spell the same pieces."""
        pieces = [self.llm._model.token_get_text(i) for i in range(self.n_vocab)]
        return "gguf:" + hashlib.sha256(json.dumps(pieces).encode()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def open_session(self, prompt: Prompt) -> LlamaCppSession:
        if prompt.images:
            raise ConfigError(f"{self.name} is a text model; images need a vision-language model")
        ids = self.encode(self.render(prompt))
        if self.add_bos:
            ids = [self.llm.token_bos(), *ids]
        return LlamaCppSession(self, ids)

    def open_session_ids(self, ids: Sequence[int]) -> LlamaCppSession:
        return LlamaCppSession(self, list(ids))

    # --- the one sequence in the context ----------------------------------------------------
    def run(self, held: list[int], new: list[int], all_logits: bool) -> tuple[np.ndarray, int]:
        """Make the context hold `held` (re-feeding what differs), run `new` after it and return the
        logits of `new` ([len(new) or 1, vocab]) and how many held tokens had to be re-fed."""
        llm = self.llm
        total = len(held) + len(new)
        if total > self.n_ctx:
            raise ModelSpecError(f"{self.name}: context of {total} tokens exceeds n_ctx={self.n_ctx} "
                                 f"(raise it with ?n_ctx=N)")
        have = llm.input_ids[: llm.n_tokens]
        n = min(len(have), len(held))
        diff = np.flatnonzero(have[:n] != np.asarray(held[:n], dtype=have.dtype)) if n else np.array([], int)
        common = int(diff[0]) if diff.size else n
        llm.n_tokens = common
        llm._ctx.kv_cache_seq_rm(-1, common, -1)
        feed = list(held[common:]) + list(new)
        rows = []
        for i in range(0, len(feed), llm.n_batch):
            batch = feed[i: i + llm.n_batch]
            want_all = all_logits and i + len(batch) > len(feed) - len(new)
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=want_all)
            llm._ctx.decode(llm._batch)
            llm.input_ids[llm.n_tokens: llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
            n_rows = len(batch) if want_all else 1
            out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_rows * self.n_vocab,))
            rows.append(out.reshape(n_rows, self.n_vocab).copy())
        if all_logits:
            logits = np.concatenate(rows)[-len(new):]
        else:
            logits = rows[-1][-1:]
        return logits, len(held) - common


class LlamaCppSession(KVSession):
    def __init__(self, backend: LlamaCppBackend, prompt_ids: list[int]):
        super().__init__(backend, prompt_ids)
        self.refed = 0  # held tokens re-fed since the last call (another session had used the context)

    def _model_forward(self, ids: list[int], all_logits: bool) -> torch.Tensor:
        b = self.backend
        with b.turns.turn():
            logits, refed = b.run(self.ids[: self._kv_len], ids, all_logits)
        self.refed += refed
        return torch.from_numpy(logits)

    def _model_crop(self, n: int) -> None:
        pass  # the next forward compares token ids and drops what differs

    def _take_refed(self) -> int:
        n, self.refed = self.refed, 0
        return n
