"""Routing policies, one per file, registered by name in reasoning.registry."""

from __future__ import annotations

from reasoning.registry import ROUTERS as _NAMES
from reasoning.registry import make_router, router_class
from routers.base import BaseRouter, Decision, Router, StepContext

ROUTERS: dict[str, type[BaseRouter]] = {name: router_class(name) for name in _NAMES}

__all__ = ["ROUTERS", "BaseRouter", "Decision", "Router", "StepContext", "make_router"]
