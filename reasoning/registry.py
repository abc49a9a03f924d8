"""One lazy registry for routers, judges and engines: name -> "module:object", imported on first use,
so that the core names them without importing them. Installed packages add names under the
entry-point groups "specstep.routers", "specstep.judges" and "specstep.engines" (value
"module:object"); a built-in name wins over a plugin's.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

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
LOAD_OPTIONS = ("load_slope", "load_free")


def router_class(name: str) -> type:
    """The class registered under `name`, imported now; an unknown name raises ConfigError."""
    return ROUTERS.load(name)


def make_router(name: str, threshold: float | None = None, **options: Any) -> Router:
    """Build a registered router; unknown names and bad thresholds raise ConfigError."""
    cls = router_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    load = {k: options.pop(k) for k in LOAD_OPTIONS if k in options}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join([*(p for p in accepted if p not in ("self", "threshold")), *LOAD_OPTIONS]) or "none"
        raise ConfigError(f"router {name!r} has no option {', '.join(unknown)} (options: {takes})")
    router = cls(threshold, **options)
    if load:
        try:
            slope, free = float(load.get("load_slope", 0)), int(load.get("load_free", 0))
        except (TypeError, ValueError):
            raise ConfigError(f"router {name!r}: load_slope must be a number and load_free an integer, "
                              f"got {load}") from None
        router.set_load_aware(slope, free)
    return router
