"""One lazy registry for routers, judges and engines: name -> "module:object", imported on first use,
so that the core names them without importing them. Installed packages add names under the
entry-point groups "specstep.routers", "specstep.judges" and "specstep.engines" (value
"module:object"); a built-in name wins over a plugin's.

`make_router` also reads the router's options: each value is converted to the type its constructor
parameter is annotated with (a string from the command line becomes the integer, number or boolean the
router takes), so routers take typed arguments and a bad value is one ConfigError line.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from reasoning.errors import ConfigError

if TYPE_CHECKING:
    from reasoning.context import Router


class Registry(Mapping[str, str]):
    """The built-in names (iterating gives them) plus the plugins of an entry-point group."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group, self._builtins = kind, group, dict(builtins)

    def __getitem__(self, name: str) -> str:
        return self._builtins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builtins)

    def __len__(self) -> int:
        return len(self._builtins)

    def plugins(self) -> dict[str, str]:
        return {ep.name: ep.value for ep in entry_points(group=self.group) if ep.name not in self._builtins}

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self.plugins()})

    def target(self, name: str) -> str | None:
        """The "module:object" registered under `name` (built-in first), or None."""
        return self._builtins.get(name) or self.plugins().get(name)

    def load(self, name: str) -> Any:
        """The object registered under `name`, imported now; an unknown name raises ConfigError."""
        target = self.target(name)
        if target is None:
            raise ConfigError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}")
        module, _, obj = target.partition(":")
        return getattr(importlib.import_module(module), obj)


ROUTERS = Registry("router", "specstep.routers", {
    "draft-only": "routers.draft_only:DraftOnlyRouter",
    "target-only": "routers.target_only:TargetOnlyRouter",
    "random": "routers.random_router:RandomRouter",
    "specreason": "routers.specreason:SpecReasonRouter",
    "rsd": "routers.rsd:RSDRouter",
    "oracle": "routers.oracle:OracleRouter",
    "arbitrage": "routers.arbitrage:ArbitrageRouter",
    "first-token": "routers.first_token:FirstTokenRouter",
    "cascade": "routers.cascade:CascadeRouter",
    "best-of-n": "routers.best_of_n:BestOfNRouter",
    "handoff": "routers.handoff:HandoffRouter",
    "lookahead": "routers.lookahead:LookaheadRouter",
})
JUDGES = Registry("judge", "specstep.judges", {
    "specreason": "judges.specreason:SpecReasonJudge",
    "prm": "judges.prm:PRMJudge",
    "rollout": "judges.rollout:RolloutJudge",
})
# engine -> a callable taking a ModelSpec and returning a Backend (reasoning.backends.load_backend)
BACKENDS = Registry("engine", "specstep.engines", {
    "hf": "reasoning.backends.hf:load_hf",
    "llamacpp": "reasoning.backends.llamacpp:LlamaCppBackend",
    "vllm": "reasoning.backends.vllm:VLLMBackend",
    "openai": "reasoning.backends.openai:OpenAIBackend",
})
ROUTER_GROUP = ROUTERS.group
# options every router with a threshold takes (BaseRouter.set_load_aware), with their types
LOAD_OPTIONS: dict[str, type] = {"load_slope": float, "load_free": int}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_EXACT = (str, Path, dict, Mapping)  # types a value must already have (a path may be given as a string)


class _Mismatch(Exception):
    """A value that is not of the annotated type and cannot be read as one."""


def _has_type(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if get_origin(hint) is Literal:
        return value in get_args(hint)
    if isinstance(value, bool) and hint is not bool:  # True is an int to Python, not to an option
        return False
    try:
        return isinstance(value, get_origin(hint) or hint)
    except TypeError:  # a hint isinstance cannot check
        return False


def _coerce(value: Any, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        members = [m for m in get_args(hint) if m is not type(None)]
        if value is None:
            if len(members) < len(get_args(hint)):
                return None
            raise _Mismatch
        if any(_has_type(value, m) for m in members):
            return value
        for m in members:
            try:
                return _coerce(value, m)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Mismatch
    if hint is int or hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Mismatch
        try:
            number = hint(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise _Mismatch from None
        if hint is int:
            if isinstance(number, float) and not number.is_integer():
                raise _Mismatch
            return int(number)
        if math.isnan(number):
            raise _Mismatch
        return float(number)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if (origin or hint) in _EXACT:
        if _has_type(value, hint):
            return value
        raise _Mismatch
    return value  # a type this module does not read (a Judge, Any): the router takes the value as it is


def _describe(hint: Any) -> str:
    """What a value of type `hint` is, for a message: "an integer", "a string or a path"..."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(m) for m in get_args(hint) if m is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    named = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
             dict: "a mapping", Mapping: "a mapping"}
    key = origin if origin in named else hint
    return named.get(key, f"a {getattr(hint, '__name__', hint)}")


def option_value(value: Any, hint: Any, what: str) -> Any:
    """`value` as the type `hint` annotates: a string becomes the integer, number (not NaN), boolean
    (true/false, yes/no, on/off, 1/0) or path the hint names; for a union, a value of one of its types
    stays as it is, else it is read as the first member it fits. A value that fits none raises
    ConfigError "`what` must be ..., got ..."."""
    try:
        return _coerce(value, hint)
    except _Mismatch:
        raise ConfigError(f"{what} must be {_describe(hint)}, got {value!r}") from None


def _option_types(cls: type) -> dict[str, Any]:
    """The annotated types of the constructor's parameters (none where they cannot be resolved)."""
    try:
        return get_type_hints(cls.__init__)
    except (NameError, TypeError):  # a plugin's annotations that name what its module does not import
        return {}


def router_class(name: str) -> type:
    """The class registered under `name`, imported now; an unknown name raises ConfigError."""
    return ROUTERS.load(name)


def make_router(name: str, threshold: float | None = None, **options: Any) -> Router:
    """Build a registered router, its options read as their annotated types; unknown names, unknown
    options, bad values and bad thresholds raise ConfigError."""
    cls = router_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted) - set(LOAD_OPTIONS))
    if unknown:
        takes = ", ".join([*(p for p in accepted if p not in ("self", "threshold")), *LOAD_OPTIONS]) or "none"
        raise ConfigError(f"router {name!r} has no option {', '.join(unknown)} (options: {takes})")
    hints = {**_option_types(cls), **LOAD_OPTIONS}
    typed = {k: option_value(v, hints[k], f"router {name!r} option {k}") if k in hints else v
             for k, v in options.items()}
    load = {k: typed.pop(k) for k in LOAD_OPTIONS if k in typed}
    router = cls(threshold, **typed)
    if load:
        router.set_load_aware(load.get("load_slope", 0.0), load.get("load_free", 0))
    return router
