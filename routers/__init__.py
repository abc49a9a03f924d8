"""Routing policies, one per file, registered by name."""

from __future__ import annotations

from typing import Any

from reasoning.errors import ConfigError
from routers.base import BaseRouter, Decision, RouteContext, Router
from routers.draft_only import DraftOnlyRouter
from routers.random_router import RandomRouter
from routers.target_only import TargetOnlyRouter

ROUTERS: dict[str, type[BaseRouter]] = {
    DraftOnlyRouter.name: DraftOnlyRouter,
    TargetOnlyRouter.name: TargetOnlyRouter,
    RandomRouter.name: RandomRouter,
}


def make_router(name: str, threshold: float | None = None, **options: Any) -> Router:
    """Build a registered router; unknown names and bad thresholds raise ConfigError."""
    cls = ROUTERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown router {name!r}: choose one of {', '.join(sorted(ROUTERS))}")
    return cls(threshold, **options)


__all__ = ["ROUTERS", "BaseRouter", "Decision", "RouteContext", "Router", "make_router"]
