"""transformers backend: any causal LM from a local directory, a .gguf file or a Hub id, on the CPU or a GPU.

Options: `device` (cpu, the default; cuda, cuda:N, mps): where the weights and the KV caches live (the
logits come back to the CPU, one row a token); `dtype` (float32, bfloat16, float16); `init=random`: a
directory holding a config.json and a tokenizer, no weights: the model is built from its config with
random weights, on the device (real shapes and costs, meaningless text: the GPU benchmark).

Sessions (`KVSession`s, reasoning.backends.kv) keep a DynamicCache with one full (non-sliding) layer per
model layer, so that it can be cropped anywhere; sliding-window models still mask correctly.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from reasoning.backends.base import (
    Generation,
    Sampling,
    Switch,
    Turns,
    Usage,
    chat_turn_markers,
    count_params,
    tokenizer_key,
    usage,
)
from reasoning.backends.kv import KVSession, find_stop
from reasoning.errors import ConfigError, ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec, alias_gguf, cache_dir, check_gguf

log = logging.getLogger(__name__)


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(16 << 20))
    h.update(str(path.stat().st_size).encode())
    return f"{path.stem}-{h.hexdigest()[:16]}"


def _convert_gguf(path: Path, key: str, ensure_file=None, keep: bool = True):
    """Load a GGUF through transformers and save a dequantized copy in the user cache (once).
    Returns (copy's path, model, tokenizer); model and tokenizer are None when the copy existed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "hf" / key
    if (cached / ".complete").is_file():
        return cached, None, None
    if ensure_file is not None:
        path = ensure_file(path)
    check_gguf(path)
    log.warning("converting %s for transformers (once; cached in %s)", path.name, cached)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(path))
    try:
        os.replace(tmp, cached)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return (cached, model, tok) if keep else (cached, None, None)


def _load_gguf(path: Path, key: str, ensure_file=None):
    """Load a GGUF through transformers once, save a dequantized copy in the user cache, and load
    that copy (seconds instead of a minute) on every later call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached, model, tok = _convert_gguf(path, key, ensure_file)
    if model is None:
        log.info("loading converted copy %s", cached)
        return AutoModelForCausalLM.from_pretrained(cached), AutoTokenizer.from_pretrained(cached)
    return model, tok


def transformers_dir(model: str) -> Path:
    """A transformers directory for a model: a bundled alias or .gguf file is converted once into the user
    cache (other engines, such as vLLM, load that copy); a directory is returned as it is."""
    from reasoning.specs import parse_spec

    spec = parse_spec(model)
    if spec.pair is not None:
        return testbed_dir(spec)
    if spec.alias is not None:
        path, key = alias_gguf(spec.alias)
        return _convert_gguf(path, key, spec.alias.assemble, keep=False)[0]
    p = Path(spec.model)
    if p.is_file() and p.suffix == ".gguf":
        return _convert_gguf(p, _file_key(p), keep=False)[0]
    return p if p.is_dir() else Path(spec.model)


def testbed_dir(spec: ModelSpec) -> Path:
    """The merged transformers copy of a testbed alias (base weights + shipped adapter), built once."""
    from reasoning import testbed

    folder = testbed.adapter_dir(spec.alias.name, spec.options.get("adapter"))
    manifest = testbed.read_manifest(folder)
    if manifest.base == spec.alias.name:
        raise ModelSpecError(f"testbed adapter {folder} names its own alias as its base")
    return testbed.build(spec.alias.name, folder, manifest, transformers_dir(testbed.base_spec(folder, manifest)),
                         cache_dir())


def load_hf(spec: ModelSpec) -> HFBackend:
    """The transformers engine's factory: a vision-language model directory (or ?vision=1) gets the
    vision backend (reasoning.backends.hf_vision), anything else the text one."""
    from reasoning.backends.hf_vision import HFVisionBackend, wants_vision

    return HFVisionBackend(spec) if wants_vision(spec) else HFBackend(spec)


DEVICE = re.compile(r"(cpu|cuda(:\d+)?|mps)")
DTYPES = ("float32", "bfloat16", "float16")


def check_options(spec: ModelSpec) -> None:
    """One line naming a bad `device`, `dtype` or `init` option, before anything loads."""
    o = spec.options
    if "device" in o and not DEVICE.fullmatch(o["device"]):
        raise ModelSpecError(f"model spec {str(spec)!r}: device must be cpu, cuda, cuda:N or mps; got {o['device']!r}")
    if "dtype" in o and o["dtype"] not in DTYPES:
        raise ModelSpecError(f"model spec {str(spec)!r}: dtype must be one of {', '.join(DTYPES)}; got {o['dtype']!r}")
    if "init" in o and o["init"] != "random":
        raise ModelSpecError(f"model spec {str(spec)!r}: init must be random (weights from a config); "
                             f"got {o['init']!r}")
    if o.get("init") == "random" and not (Path(spec.model) / "config.json").is_file():
        raise ModelSpecError(f"model spec {str(spec)!r}: init=random needs a directory with a config.json")


def random_model(folder: str | Path, device: str = "cpu", dtype: str | None = None):
    """A causal LM built from `folder`'s config.json with random weights, directly on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    gpus = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=gpus), torch.device(device):  # seeded, the process's RNG untouched
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype) if dtype else None)


class HFBackend:
    """A causal LM through transformers. One instance serves many sessions; sessions may live in
    different threads (forward passes take turns on one lock), but one session is one thread's."""

    def __init__(self, spec: ModelSpec):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_options(spec)
        self.spec = spec
        alias = spec.alias
        t0 = time.perf_counter()
        if spec.options.get("init") == "random":
            tok = AutoTokenizer.from_pretrained(spec.model)
            model = random_model(spec.model, spec.options.get("device", "cpu"), spec.options.get("dtype"))
        elif spec.pair is not None:
            from reasoning.testbed import apply_head

            cached = testbed_dir(spec)
            model, tok = AutoModelForCausalLM.from_pretrained(cached), AutoTokenizer.from_pretrained(cached)
            apply_head(model, cached)
        elif alias is not None:
            path, key = alias_gguf(alias)
            model, tok = _load_gguf(path, key, alias.assemble)
        else:
            p = Path(spec.model)
            if p.is_file() and p.suffix == ".gguf":
                model, tok = _load_gguf(p, _file_key(p))
            elif p.exists() and not p.is_dir():
                raise ModelSpecError(f"not a model directory or .gguf file: {spec.model}")
            else:
                try:
                    tok = AutoTokenizer.from_pretrained(spec.model)
                    model = AutoModelForCausalLM.from_pretrained(spec.model)
                except (OSError, ValueError) as e:
                    where = "directory" if p.is_dir() else "Hugging Face Hub id (offline?)"
                    raise ModelSpecError(f"cannot load model {spec.model!r} as a {where}: "
                                         f"{str(e).splitlines()[0]}") from None
        self._setup(model, tok, alias.chat if alias is not None else bool(getattr(tok, "chat_template", None)))
        log.info("loaded %s in %.1fs (chat=%s)", spec, time.perf_counter() - t0, self.chat)

    def _setup(self, model, tok, has_chat: bool) -> None:
        """What every transformers backend sets after loading: dtype, chat mode, end tokens, the lock."""
        dtype = self.spec.options.get("dtype")
        if dtype:
            model = model.to(getattr(torch, dtype))
        self.device = torch.device(self.spec.options.get("device", "cpu"))
        model = model.to(self.device)
        model.eval()
        self.model, self.tokenizer = model, tok
        self.chat = self.spec.flag("chat", has_chat)
        self._markers: tuple[str, str] | None = None
        eos = {tok.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
            tid = tok.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != tok.unk_token_id and t in tok.get_vocab():
                eos.add(tid)
        self.eos_ids = {int(e) for e in eos if e is not None}
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.turns = Turns()  # forward passes of all sessions take turns
        self.n_params = count_params(model)
        head = model.get_output_embeddings()
        self.n_vocab = int(getattr(head, "out_features", head.weight.shape[0]))  # the logits' size (a pruned head's)
        self.spec_tokens = int(self.spec.number("spec_tokens", 4, 1, integer=True))
        self._assistant: HFBackend | None = None
        self.lockstep = self.spec.flag("lockstep", True)  # decode the generations of solves side by side together

    @functools.cached_property
    def decoder(self):
        """The thread that decodes the generations of solves side by side in one batch
        (reasoning.backends.hf_batch), started on first use."""
        from reasoning.backends.hf_batch import DecodeLoop

        return DecodeLoop(self)

    @property
    def assistant(self) -> HFBackend | None:
        """The draft model of token-level speculative decoding (`?assistant=SPEC`), loaded on first use."""
        name = self.spec.options.get("assistant")
        if not name:
            return None
        if self._assistant is None:
            from reasoning.backends import load_backend

            a = load_backend(name)
            if not isinstance(a, HFBackend) or a.tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise ConfigError(f"model spec {str(self.spec)!r}: the assistant {name!r} must be a transformers "
                                  "model with the same tokenizer")
            self._assistant = a
        return self._assistant

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def context_length(self) -> int | None:
        """Tokens the model's positions cover (None when its config does not say)."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def load(self) -> int:
        """Sessions waiting for or running a forward pass, or generating in the batch, now."""
        return self.turns.waiting + (self.decoder.load() if "decoder" in self.__dict__ else 0)

    def render(self, prompt: Prompt) -> str:
        if self.chat:
            text = self.tokenizer.apply_chat_template(prompt.messages(), tokenize=False,
                                                      add_generation_prompt=True)
            return text + prompt.prefix
        return prompt.plain()

    @property
    def template(self):
        """What renders the chat template: the tokenizer."""
        return self.tokenizer

    def turn_markers(self) -> tuple[str, str] | None:
        """(end of assistant turn + start of user turn, end of user turn + start of assistant turn),
        read off the chat template; None for the plain prompt format."""
        if not self.chat:
            return None
        if self._markers is None:
            self._markers = chat_turn_markers(self.template)
        return self._markers

    @functools.cached_property
    def vocab_key(self) -> str:
        """Equal for two models exactly when their sessions can take each other's token ids."""
        return tokenizer_key(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def open_session(self, prompt: Prompt) -> HFSession:
        if prompt.images:
            raise ConfigError(f"{self.name} is a text model; images need a vision-language model")
        text = self.render(prompt)
        ids = self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]
        return HFSession(self, ids)

    def generate_many(self, requests: Sequence[tuple[HFSession, dict]]) -> list[Generation]:
        """One generation per (session, `generate` keyword arguments), decoded side by side in one batch in
        this thread (sessions from `HFSession.fork`: one prefix, several continuations)."""
        from reasoning.backends.hf_batch import generate_batch

        return generate_batch(self, requests)

    def open_session_ids(self, ids: Sequence[int]) -> HFSession:
        """A session on raw token ids (used to check KV reuse against a one-shot forward)."""
        return HFSession(self, list(ids))


class HFSession(KVSession):
    def __init__(self, backend: HFBackend, prompt_ids: list[int]):
        from transformers import DynamicCache

        super().__init__(backend, prompt_ids)
        self._cache = DynamicCache()  # no config: full layers everywhere, croppable at any length
        self._assist: HFSession | None = None  # the assistant's session (token-level speculation)

    def close(self) -> None:
        super().close()
        self._cache = None
        if self._assist is not None:
            self._assist.close()
            self._assist = None

    @property
    def can_fork(self) -> bool:
        """Whether `fork` works: plain text sessions (not vision ones)."""
        return type(self)._model_forward is HFSession._model_forward

    def fork(self) -> HFSession:
        """A second session holding this one's ids and KV (copied), to write from the same prefix side by
        side (`HFBackend.generate_many`)."""
        from transformers import DynamicCache

        if not self.can_fork:
            raise TypeError(f"a {type(self).__name__} cannot be forked")
        twin = HFSession(self.backend, self.ids[: self.n_prompt])
        twin.ids, twin._kv_len, twin._logits, twin._saved = list(self.ids), self._kv_len, self._logits, self._saved
        twin._cache = DynamicCache()
        if self._kv_len:
            for li, layer in enumerate(self._cache.layers):
                twin._cache.update(layer.keys.clone(), layer.values.clone(), li)
        return twin

    def _model_forward(self, ids: list[int], all_logits: bool) -> torch.Tensor:
        b = self.backend
        with b.turns.turn():
            out = b.model(input_ids=torch.tensor([ids], device=b.device), use_cache=True,
                          logits_to_keep=0 if all_logits else 1, **{b._cache_kw: self._cache})
        return out.logits[0].float().cpu()

    def _model_crop(self, n: int) -> None:
        self._cache.crop(-(self._kv_len - n))

    @torch.inference_mode()
    def generate(self, *, max_tokens: int, stop: Sequence[str] = (), temperature: float = 0.0,
                 seed: int | None = None, ignore_eos: bool = False, switch: Switch | None = None,
                 sampling: Sampling | None = None) -> Generation:
        if temperature == 0 and self.backend.assistant is not None and switch is None:
            return self._generate_assisted(max_tokens, stop, ignore_eos)
        kw = dict(max_tokens=max_tokens, stop=tuple(stop), temperature=temperature, seed=seed, ignore_eos=ignore_eos,
                  switch=switch, sampling=sampling)
        from reasoning.batching import LOCKSTEP

        if self.backend.lockstep and LOCKSTEP.is_worker() and type(self)._model_forward is HFSession._model_forward:
            return self.backend.decoder.submit(self, kw)
        return super().generate(**kw)

    def _assistant_session(self) -> HFSession:
        """The assistant's session, holding exactly this session's token ids."""
        a = self._assist
        if a is None:
            a = self._assist = self.backend.assistant.open_session_ids(self.ids)
            return a
        n = next((i for i, (x, y) in enumerate(zip(a.ids, self.ids)) if x != y), min(len(a.ids), len(self.ids)))
        if n < len(a.ids):
            a.rollback(max(n, 1))
        a.append_tokens(self.ids[len(a.ids):])
        return a

    def _generate_assisted(self, max_tokens: int, stop: Sequence[str], ignore_eos: bool) -> Generation:
        """Greedy decoding with token-level speculation (Leviathan et al.): the assistant proposes up
        to `spec_tokens` tokens, one forward pass of this model checks them all, and the longest
        prefix that greedy decoding would have produced is kept, plus this model's own next token.
        The output equals plain greedy decoding; the usage includes the assistant's work."""
        t0 = time.perf_counter()
        b, a_params = self.backend, self.backend.assistant.n_params
        out: list[int] = []
        lps: list[float] = []
        ents: list[float] = []
        finish, matched, cut, text = "length", None, None, ""
        processed = a_processed = 0
        start = len(self.ids)
        while finish == "length" and len(out) < max_tokens:
            a = self._assistant_session()
            props: list[int] = []
            for _ in range(min(b.spec_tokens, max_tokens - len(out) - 1)):
                logits, fed = a._next_logits()
                a_processed += fed
                props.append(int(torch.argmax(logits)))
                a.ids.append(props[-1])
                if props[-1] in b.eos_ids:
                    break
            self._pend_last_without_logits()
            pending = self.ids[self._kv_len:]
            first = self._logits
            base = len(self.ids)
            self.ids.extend(props)
            rows = list(self._forward(pending + props, all_logits=True)) if pending or props else []
            processed += len(pending) + len(props)
            dists = rows[len(pending) - 1:] if pending else [first, *rows]
            m = 0
            while m < len(props) and props[m] == int(torch.argmax(dists[m])):
                m += 1
            self.rollback(base + m)  # the accepted tokens stay in the cache
            for i, tok in enumerate(props[:m] + [int(torch.argmax(dists[m]))]):
                if tok in b.eos_ids and not ignore_eos:
                    finish = "eos"
                    self.rollback(base + i)
                    break
                logp = torch.log_softmax(dists[i], dim=-1)
                out.append(tok)
                lps.append(float(logp[tok]))
                ents.append(float(-(logp.exp() * logp).sum()))
                if i == m:
                    self.ids.append(tok)  # this model's own token: fed by the next forward pass
                hit = None
                if stop:  # without stop strings the text is decoded once, after the loop
                    prev, text = len(text), b.decode(out)
                    hit = find_stop(text, stop, prev)
                if hit is not None or len(out) >= max_tokens:
                    if hit is not None:
                        finish, matched, cut = "stop", hit[1], hit[0] + len(hit[1])
                    self.rollback(base + i + 1)
                    break
        if not stop:
            text = b.decode(out)
        if cut is not None and cut < len(text):
            out, lps, ents, text = self._cut_inside_token(start, out, lps, ents, text, cut)
        sampled = len(lps) + (finish == "eos")
        u = Usage(processed - min(processed, sampled), sampled, time.perf_counter() - t0,
                  2.0 * (b.n_params * processed + a_params * a_processed))
        return Generation(text, out, lps, ents, finish, matched, u)

    @property
    def can_branch(self) -> bool:
        """Whether `branch_logprobs` works here: full attention in every layer (its tree mask is not a
        sliding window's)."""
        types = getattr(self.backend.model.config, "layer_types", None) or ()
        return not any("sliding" in str(t) for t in types)

    @torch.inference_mode()
    def branch_logprobs(self, pieces: Sequence[str], suffix: str,
                        candidates: Sequence[str]) -> tuple[list[dict[str, float]], Usage]:
        """For each j, the log-probability of each candidate next token after this session's text +
        pieces[0..j] + `suffix`, in one forward pass: a tree attention mask lets each suffix see
        only the pieces before it (each piece is fed once). The session is left as it was."""
        t0 = time.perf_counter()
        b = self.backend
        ids = [b.encode(c) for c in candidates]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"candidates {list(candidates)!r} must be single tokens for {b.name}")
        _, fed = self._next_logits()
        self._remember()
        p0, tail = self._kv_len, b.encode(suffix)
        seq: list[int] = []
        pos: list[int] = []
        branch: list[int] = []  # the piece each token belongs to, or -1 - j for the suffix after piece j
        for j, piece in enumerate(pieces):
            for k, part in ((j, b.encode(piece)), (-1 - j, tail)):
                start = p0 + sum(1 for x in branch if x >= 0)  # after the pieces so far
                seq += part
                pos += range(start, start + len(part))
                branch += [k] * len(part)
        if not seq:
            return [], Usage(seconds=time.perf_counter() - t0)
        own = torch.tensor(branch)
        piece_of = torch.where(own >= 0, own, -1 - own)
        is_piece = own >= 0
        # a piece token sees earlier pieces up to its own; a suffix token sees its pieces and its own suffix
        sees = (piece_of[None, :] <= piece_of[:, None]) & is_piece[None, :]
        sees |= (~is_piece[:, None]) & (own[None, :] == own[:, None])
        sees &= torch.ones(len(seq), len(seq), dtype=torch.bool).tril()
        mask = torch.cat([torch.ones(len(seq), p0, dtype=torch.bool), sees], 1)[None, None]
        with b.turns.turn():
            out = b.model(input_ids=torch.tensor([seq], device=b.device),
                          position_ids=torch.tensor([pos], device=b.device), attention_mask=mask.to(b.device),
                          use_cache=True, **{b._cache_kw: self._cache})
        self._kv_len += len(seq)
        self._crop_kv(p0)
        ends = [i for i in range(len(seq)) if branch[i] < 0 and (i + 1 == len(seq) or branch[i + 1] != branch[i])]
        logp = torch.log_softmax(out.logits[0, ends].float().cpu(), dim=-1)
        dists = [{c: float(row[i[0]]) for c, i in zip(candidates, ids)} for row in logp]
        return dists, usage(b.n_params, fed + len(seq), seconds=time.perf_counter() - t0)
