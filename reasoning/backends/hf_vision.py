"""transformers backend for vision-language (image-text-to-text) models from a local directory.

Sessions are HFSessions whose first forward pass feeds the whole prompt together with the processor's
pixel inputs; later passes feed only new token ids against the KV cache. A session with images cannot
roll back into its prompt (that would need the pixels again): `rollback` raises ValueError.

Positions: models with multimodal RoPE (Qwen2-VL and its kin, which have `get_rope_index`) get explicit
position ids on every forward. The first pass takes them from `get_rope_index` on the prompt, which
also gives the session's offset (rope delta) between text positions and token indices; every later
token i gets position i + delta. transformers would otherwise keep that delta on the model
(`model.rope_deltas`), shared by all sessions, so interleaved sessions on different images would
use each other's. Other models get no position ids and count positions from the cache length.

Spec: a local directory whose config.json has a `vision_config`, or any hf spec with ``?vision=1``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reasoning.backends.hf import HFBackend, HFSession
from reasoning.errors import ConfigError, ModelSpecError
from reasoning.prompts import Prompt
from reasoning.specs import ModelSpec

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


def wants_vision(spec: ModelSpec) -> bool:
    """Whether an hf spec names a vision-language model: option vision=1/0, else a local directory whose
    config.json declares a vision part (`vision_config`)."""
    opt = spec.options.get("vision")
    if opt is not None:
        return opt.lower() in _TRUE
    if spec.alias is not None:
        return False
    cfg = Path(spec.model) / "config.json"
    try:
        data = json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "vision_config" in data


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _processor_class_name(d: Path) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        cls = _read_json(d / name).get("processor_class")
        if cls:
            return cls
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(_read_json(d / "config.json").get("model_type", ""))


def _chat_template(d: Path) -> str | None:
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text()
    return _read_json(d / "chat_template.json").get("chat_template") or \
        _read_json(d / "processor_config.json").get("chat_template")


def _processor_without_video(path: str, err: ImportError):
    """The model's processor class with tokenizer and image processor and no video processor.

    transformers 5 loads (and type-checks) a video processor for Qwen2-VL-like processors, and both
    need torchvision; images alone do not. specstep feeds images only."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    d = Path(path)
    name = _processor_class_name(d) if d.is_dir() else None
    cls = getattr(transformers, name, None) if name else None
    attrs = cls.get_attributes() if cls is not None else []
    if not attrs or "video_processor" not in attrs or not set(attrs) <= {"tokenizer", "image_processor",
                                                                          "video_processor"}:
        raise err
    parts: dict[str, Any] = {"video_processor": None}
    parts["tokenizer"] = AutoTokenizer.from_pretrained(path)
    if "image_processor" in attrs:
        parts["image_processor"] = AutoImageProcessor.from_pretrained(path)
    template = _chat_template(d) or getattr(parts["tokenizer"], "chat_template", None)
    params = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in _read_json(d / "processor_config.json").items()
             if k in params and k not in parts and k != "chat_template"}

    def check(self, argument_name, argument):  # None is allowed for the video processor
        return None if argument is None else cls.check_argument_for_proper_class(self, argument_name, argument)

    sub = type(cls.__name__, (cls,), {"check_argument_for_proper_class": check, "__module__": __name__})
    log.info("loaded %s without a video processor (torchvision is not installed)", cls.__name__)
    return sub(**parts, chat_template=template, **extra)


def load_processor(path: str):
    """AutoProcessor for a model directory; without torchvision, the same processor minus its video part."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except ImportError as e:
        if importlib.util.find_spec("torchvision") is not None:
            raise
        return _processor_without_video(path, e)


class HFVisionBackend(HFBackend):
    """An image-text-to-text model through transformers (AutoModelForImageTextToText + AutoProcessor).
    Text-only prompts work too. Like HFBackend, sessions may live in different threads."""

    def __init__(self, spec: ModelSpec):
        from transformers import AutoModelForImageTextToText

        self.spec = spec
        if spec.alias is not None:
            raise ModelSpecError(f"model spec {str(spec)!r}: bundled aliases are text-only models")
        p = Path(spec.model)
        if p.exists() and not p.is_dir():
            raise ModelSpecError(f"model spec {str(spec)!r}: a vision-language model loads from a directory")
        t0 = time.perf_counter()
        try:
            processor = load_processor(spec.model)
            model = AutoModelForImageTextToText.from_pretrained(spec.model)
        except (OSError, ValueError, KeyError, ImportError) as e:
            where = "directory" if p.is_dir() else "Hugging Face Hub id (offline?)"
            raise ModelSpecError(f"cannot load vision-language model {spec.model!r} as a {where}: "
                                 f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        self.processor = processor
        tok = processor.tokenizer
        self._template_owner = processor if getattr(processor, "chat_template", None) else tok
        self._setup(model, tok, bool(getattr(self._template_owner, "chat_template", None)))
        model = self.model
        inner = getattr(model, "model", model)
        self._rope_index = getattr(inner, "get_rope_index", None)  # multimodal RoPE (Qwen2-VL and kin)
        self.image_token_id = getattr(processor, "image_token_id", None)
        log.info("loaded %s in %.1fs (vision, chat=%s)", spec, time.perf_counter() - t0, self.chat)

    @property
    def template(self):
        """What renders the chat template: the processor where it has one, else the tokenizer."""
        return self._template_owner

    def _apply_template(self, messages: list[dict[str, Any]]) -> str:
        return self._template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render(self, prompt: Prompt) -> str:
        if self.chat:
            return self._apply_template(prompt.messages()) + prompt.prefix
        return prompt.plain(self.name)

    def open_session(self, prompt: Prompt) -> HFVisionSession:
        text = self.render(prompt)
        if not prompt.images:
            return HFVisionSession(self, self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])
        try:
            # the chat template already holds the special tokens
            enc = self.processor(text=[text], images=list(prompt.images), return_tensors="pt",
                                 add_special_tokens=False)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model {self.name} cannot take {len(prompt.images)} image(s) with this prompt: "
                              f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        ids = enc["input_ids"][0].tolist()
        mm = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return HFVisionSession(self, ids, mm)

    def open_session_ids(self, ids: Sequence[int]) -> HFVisionSession:
        """A text-only session on raw token ids."""
        return HFVisionSession(self, list(ids))


class HFVisionSession(HFSession):
    def __init__(self, backend: HFVisionBackend, prompt_ids: list[int], mm: dict[str, Any] | None = None):
        super().__init__(backend, prompt_ids)
        self._mm = mm or None  # pixel inputs, fed with the prompt in the first forward, then dropped
        self.has_images = self._mm is not None
        self._rope_delta = 0
        self._prompt_logits: torch.Tensor | None = None  # next-token logits after the prompt
        self._min_kv = 0  # the KV cannot be cropped below the last image token
        if self._mm is not None:
            types = self._mm.get("mm_token_type_ids")
            if types is None:
                types = torch.tensor([prompt_ids]) == backend.image_token_id
            where = torch.nonzero(types[0]).flatten()
            self._min_kv = int(where[-1]) + 1 if where.numel() else 0

    def _run(self, ids: list[int], start: int, all_logits: bool, mm: dict[str, Any] | None) -> torch.Tensor:
        b = self.backend
        ids_t = torch.tensor([ids], device=b.device)
        kw: dict[str, Any] = {k: v.to(b.device) if isinstance(v, torch.Tensor) else v for k, v in (mm or {}).items()}
        if b._rope_index is not None:
            if mm is not None and start == 0:
                params = inspect.signature(b._rope_index).parameters
                pos, delta = b._rope_index(ids_t, **{k: v for k, v in kw.items() if k in params})
                self._rope_delta = int(delta.flatten()[0])
            else:
                pos = (torch.arange(start, start + len(ids), device=b.device) + self._rope_delta).view(1, 1, -1)
                pos = pos.expand(3, 1, -1)
            kw["position_ids"] = pos
        with b.turns.turn():
            out = b.model(input_ids=ids_t, use_cache=True, logits_to_keep=0 if all_logits else 1,
                          **{b._cache_kw: self._cache}, **kw)
        logits = out.logits[0].float().cpu()
        end = start + len(ids)
        if start < self.n_prompt <= end and (all_logits or end == self.n_prompt):
            self._prompt_logits = logits[self.n_prompt - start - 1 if all_logits else -1].float()
        return logits

    def _model_forward(self, ids: list[int], all_logits: bool) -> torch.Tensor:
        start = self._kv_len
        if self._mm is None:
            return self._run(ids, start, all_logits, None)
        # First forward (start == 0): the prompt alone with its pixels, then whatever follows it.
        mm, self._mm = self._mm, None
        head, rest = ids[: self.n_prompt], ids[self.n_prompt:]
        logits = self._run(head, 0, all_logits, mm)
        if not rest:
            return logits
        more = self._run(rest, len(head), all_logits, None)
        return torch.cat([logits, more]) if all_logits else more

    @property
    def can_branch(self) -> bool:
        return False  # its forward passes carry pixels and multimodal positions, which branch_logprobs does not

    def _model_crop(self, n: int) -> None:
        if n < self._min_kv:
            raise ValueError(f"cannot crop the KV cache to {n} tokens: the prompt's images end at token "
                             f"{self._min_kv}")
        super()._model_crop(n)

    def _crop_kv(self, n: int) -> None:
        super()._crop_kv(n)
        if self._logits is None and n == self.n_prompt == self._kv_len and self._prompt_logits is not None:
            self._logits = self._prompt_logits  # rolled back to the prompt: no forward needed

    def rollback(self, n_tokens: int) -> None:
        if n_tokens < self.n_prompt:
            if self.has_images:
                raise ValueError(f"cannot roll back to {n_tokens} tokens: the prompt with its images is "
                                 f"{self.n_prompt} tokens (open a new session for another prompt)")
            self._prompt_logits = None  # the prompt may be rewritten
        super().rollback(n_tokens)

    def close(self) -> None:
        super().close()
        self._mm = self._prompt_logits = None
