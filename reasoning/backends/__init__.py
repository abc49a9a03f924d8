"""Model engines behind one `Backend` protocol, and `load_backend(spec)` that caches loaded models."""

from __future__ import annotations

import importlib.util
import threading

from reasoning.backends.base import Backend, Generation, Scored, Session, Usage
from reasoning.errors import BackendUnavailableError
from reasoning.registry import BACKENDS
from reasoning.specs import ModelSpec, parse_spec

__all__ = ["Backend", "Generation", "Scored", "Session", "Usage", "check_engine", "check_spec", "clear_backend_cache",
           "load_backend"]

_LOADED: dict[tuple, Backend] = {}
_LOCK = threading.Lock()

# engine -> (its name in messages, the install extra, the modules it imports that the core does not
# install). llama-cpp-python and vLLM themselves are checked by their backends, with their own messages.
NEEDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hf": ("transformers", "transformers", ("torch", "transformers", "gguf", "safetensors")),
    "llamacpp": ("llama.cpp", "llamacpp", ("torch", "gguf")),
}


def missing_module(modules: tuple[str, ...]) -> str | None:
    """The first of `modules` that cannot be imported (found without importing it), or None."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def check_engine(spec: ModelSpec) -> None:
    """One line naming the extra to install when the engine of `spec` is missing a package."""
    if spec.engine not in NEEDS:
        return
    label, extra, modules = NEEDS[spec.engine]
    name = missing_module(modules)
    if name is not None:
        raise BackendUnavailableError(f"model spec {str(spec)!r}: the {label} engine needs {name}, which is not "
                                      f'installed: pip install "specstep[{extra}]"')



def check_spec(spec: ModelSpec) -> None:
    """What can be checked before a model loads: the engine's packages and (transformers) its options."""
    check_engine(spec)
    if spec.engine == "hf":
        from reasoning.backends.hf import check_options

        check_options(spec)
    if spec.engine == "vllm":
        from reasoning.backends.vllm import check_options as check_vllm

        check_vllm(spec)


def load_backend(spec: str | ModelSpec) -> Backend:
    """Load (once per process) the engine a spec names."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    key = (spec.engine, spec.model, tuple(sorted(spec.options.items())))
    with _LOCK:
        if key not in _LOADED:
            check_spec(spec)
            _LOADED[key] = BACKENDS.load(spec.engine)(spec)  # the engine's factory (reasoning.registry)
        return _LOADED[key]


def clear_backend_cache() -> None:
    with _LOCK:
        _LOADED.clear()
