"""Routers by name, as "module:object" strings imported on first use, so that the core can build a
router without importing the routers package. Installed packages add routers under the entry-point
group "specstep.routers" (name = "module:Class"); a built-in name wins over a plugin's.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from reasoning.controller import Router
from reasoning.errors import ConfigError

ROUTERS: dict[str, str] = {
    "draft-only": "routers.draft_only:DraftOnlyRouter",
    "target-only": "routers.target_only:TargetOnlyRouter",
    "random": "routers.random_router:RandomRouter",
    "specreason": "routers.specreason:SpecReasonRouter",
    "rsd": "routers.rsd:RSDRouter",
    "oracle": "routers.oracle:OracleRouter",
    "arbitrage": "routers.arbitrage:ArbitrageRouter",
}
ROUTER_GROUP = "specstep.routers"
LOAD_OPTIONS = ("load_slope", "load_free")


def router_class(name: str) -> type:
    """The class registered under `name`, imported now; an unknown name raises ConfigError."""
    target = ROUTERS.get(name)
    if target is None:
        plugins = {ep.name: ep.value for ep in entry_points(group=ROUTER_GROUP)}
        target = plugins.get(name)
        if target is None:
            raise ConfigError(f"unknown router {name!r}: choose one of {', '.join(sorted({*ROUTERS, *plugins}))}")
    module, _, obj = target.partition(":")
    return getattr(importlib.import_module(module), obj)


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
