"""Routing policies, one per file, registered by name."""

from __future__ import annotations

import inspect
from typing import Any

from reasoning.errors import ConfigError
from routers.arbitrage import ArbitrageRouter
from routers.base import BaseRouter, Decision, RouteContext, Router
from routers.draft_only import DraftOnlyRouter
from routers.oracle import OracleRouter
from routers.random_router import RandomRouter
from routers.rsd import RSDRouter
from routers.specreason import SpecReasonRouter
from routers.target_only import TargetOnlyRouter

ROUTERS: dict[str, type[BaseRouter]] = {
    DraftOnlyRouter.name: DraftOnlyRouter,
    TargetOnlyRouter.name: TargetOnlyRouter,
    RandomRouter.name: RandomRouter,
    SpecReasonRouter.name: SpecReasonRouter,
    RSDRouter.name: RSDRouter,
    OracleRouter.name: OracleRouter,
    ArbitrageRouter.name: ArbitrageRouter,
}


def make_router(name: str, threshold: float | None = None, **options: Any) -> Router:
    """Build a registered router; unknown names and bad thresholds raise ConfigError."""
    cls = ROUTERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown router {name!r}: choose one of {', '.join(sorted(ROUTERS))}")
    accepted = inspect.signature(cls.__init__).parameters
    load = {k: options.pop(k) for k in ("load_slope", "load_free") if k in options}
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


LOAD_OPTIONS = ("load_slope", "load_free")


__all__ = ["ROUTERS", "BaseRouter", "Decision", "RouteContext", "Router", "make_router"]
