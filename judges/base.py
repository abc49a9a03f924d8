from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from reasoning.context import StepContext


@runtime_checkable
class Judge(Protocol):
    """Score a step in [0, 1] (higher is better). A judge reports each of its model calls with
    `ctx.report("judge", usage)` and must leave every session it touches as it found it."""

    name: str

    def score(self, ctx: StepContext, step_text: str) -> float: ...
