"""Model engines behind one `Backend` protocol, and `load_backend(spec)` that caches loaded models."""

from __future__ import annotations

import threading

from reasoning.backends.base import Backend, Generation, Scored, Session, Usage
from reasoning.errors import BackendUnavailableError
from reasoning.specs import ModelSpec, parse_spec

__all__ = ["Backend", "Generation", "Scored", "Session", "Usage", "load_backend", "clear_backend_cache"]

_LOADED: dict[tuple, Backend] = {}
_LOCK = threading.Lock()



def load_backend(spec: str | ModelSpec) -> Backend:
    """Load (once per process) the engine a spec names."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    key = (spec.engine, spec.model, tuple(sorted(spec.options.items())))
    with _LOCK:
        if key not in _LOADED:
            if spec.engine == "hf":
                from reasoning.backends.hf_vision import wants_vision

                if wants_vision(spec):  # vision-language model directory, or ?vision=1
                    from reasoning.backends.hf_vision import HFVisionBackend

                    _LOADED[key] = HFVisionBackend(spec)
                else:
                    from reasoning.backends.hf import HFBackend

                    _LOADED[key] = HFBackend(spec)
            elif spec.engine == "llamacpp":
                from reasoning.backends.llamacpp import LlamaCppBackend

                _LOADED[key] = LlamaCppBackend(spec)
            elif spec.engine == "vllm":
                from reasoning.backends.vllm import VLLMBackend

                _LOADED[key] = VLLMBackend(spec)
            elif spec.engine == "openai":
                from reasoning.backends.openai import OpenAIBackend

                _LOADED[key] = OpenAIBackend(spec)
            else:  # parse_spec only returns known engines
                raise BackendUnavailableError(f"no backend for engine {spec.engine!r}")
        return _LOADED[key]


def clear_backend_cache() -> None:
    with _LOCK:
        _LOADED.clear()
