"""The base of the routers: a score and a threshold.

As in RouteLLM, a router turns the situation into one float and the threshold decision is a
concrete method of the base class, so all routers compare on one scale; each router documents
what its score and its threshold mean. The Router protocol, `StepContext` and `Decision` are the
core's contract (reasoning.context) and are re-exported here.
"""

from __future__ import annotations

import copy
import math

from reasoning.backends.base import Generation, Usage
from reasoning.context import Candidate, Decision, Router, StepContext
from reasoning.errors import ConfigError

# Score differences this small are numerical noise, not a better step: a near-tie keeps the draft.
TIE_TOLERANCE = 1e-3


def same_step(a: str | None, b: str | None) -> bool:
    """Whether two steps are the same text once whitespace is normalised."""
    return a is not None and b is not None and " ".join(a.split()) == " ".join(b.split())


def target_better(target_score: float, draft_score: float, tau: float = 0.0) -> bool:
    """The oracle rule: the target's step beats the draft's by more than tau (and more than a tie)."""
    return target_score - draft_score > tau + TIE_TOLERANCE


def report_written(ctx: StepContext, model: str, gens: list[Generation], calls: int) -> None:
    """Report the steps `StepContext.write_steps` wrote: one call for all of them when it batched them
    (`calls` 1), else one call each."""
    for k, gen in enumerate(gens):
        ctx.report(model, gen.usage, calls=1 if calls > 1 or k == 0 else 0)


def target_load(ctx: StepContext) -> int:
    """Calls waiting for or running on the target engine now (0 for engines that cannot tell)."""
    load = getattr(ctx.backend("target"), "load", None)
    return int(load()) if callable(load) else 0


class BaseRouter:
    """Score, then escalate when score > threshold (routers with `escalate_above = False` escalate
    when score < threshold).

    Load-aware routing (SmartSpec's lesson: under load, escalations cost the most): with
    ``load_slope`` > 0, every target call beyond ``load_free`` that is queued or running when a step
    is routed moves the threshold by ``load_slope`` towards keeping the draft's step, so that
    escalations are shed first. `make_router` accepts both options for every router with a threshold.
    """

    name = "base"
    reviews = False  # True: `review` is called on escalated steps
    needs_draft = True
    needs_target = True
    proposes = True  # the draft writes its proposal before `route` (routers that decide first: False)
    threshold_range: tuple[float, float] | None = (0.0, 1.0)
    default_threshold: float | None = None
    escalate_above = True
    load_slope = 0.0
    load_free = 0

    def __init__(self, threshold: float | None = None):
        if threshold is None:
            threshold = self.default_threshold
        if self.threshold_range is not None:
            lo, hi = self.threshold_range
            if threshold is None:
                raise ConfigError(f"router {self.name!r} needs a threshold between {lo} and {hi}")
            if not isinstance(threshold, (int, float)) or math.isnan(threshold) or not lo <= threshold <= hi:
                raise ConfigError(f"threshold {threshold!r} is out of range for router {self.name!r}: "
                                  f"use a number between {lo} and {hi}")
        self.threshold = None if threshold is None else float(threshold)

    def for_solve(self) -> BaseRouter:
        """A shallow copy for one solve, with its own per-solve state (`start`); models, judges and
        options stay shared."""
        router = copy.copy(self)
        router.start()
        return router

    def start(self) -> None:
        """Set up the per-solve state (none here)."""

    def leftover(self) -> list[Usage]:
        """Draft work paid for and never used (none here)."""
        return []

    def score(self, ctx: StepContext) -> float:
        raise NotImplementedError

    def set_load_aware(self, slope: float, free: int = 0) -> None:
        if self.threshold is None:
            raise ConfigError(f"router {self.name!r} has no threshold, so it cannot be load-aware")
        if not (slope >= 0 and math.isfinite(slope)) or free < 0:
            raise ConfigError(f"load_slope must be a finite number >= 0 and load_free >= 0, got {slope}, {free}")
        self.load_slope, self.load_free = float(slope), int(free)

    def effective_threshold(self, ctx: StepContext) -> float:
        """The threshold for this step: raised (or, for `escalate_above = False`, lowered) under load."""
        if not self.load_slope:
            return self.threshold
        ctx.target_load = target_load(ctx)
        shift = self.load_slope * max(0, ctx.target_load - self.load_free)
        return self.threshold + shift if self.escalate_above else self.threshold - shift

    def decide(self, score: float, threshold: float | None = None) -> bool:
        tau = self.threshold if threshold is None else threshold
        return score > tau if self.escalate_above else score < tau

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        s = self.score(ctx)
        return Decision(escalate=self.decide(s, tau), score=s, threshold=tau)

    def review(self, ctx: StepContext, decision: Decision, target: Generation) -> None:
        """Called after an escalated step was written by the target (before it is appended); a router
        may score it and set `decision.target_score` / `decision.wasted`. Costs go through ctx.report."""

    def __str__(self) -> str:
        return self.name


__all__ = ["TIE_TOLERANCE", "BaseRouter", "Candidate", "Decision", "Router", "StepContext", "same_step",
           "target_better", "target_load"]
