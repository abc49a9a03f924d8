"""Choosing thresholds on validation problems, so that nothing reported on test problems was tuned on them.

Per policy, among its configurations (thresholds, escalation rates) run on the validation problems: the
cheapest (lowest mean modeled seconds, from a latency profile fitted on those records) whose accuracy
reaches target-only's minus `margin`; where none does, the most accurate (the cheapest among ties). A
policy with one configuration keeps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from eval.records import EvalRecord, config_key
from eval.summary import Point, summarize

if TYPE_CHECKING:
    from eval.latency import LatencyProfile
    from eval.sweep import SweepConfig

TOLERANCE = 1e-9


class Choice(BaseModel):
    policy: str
    config: str
    accuracy: float  # on the validation problems
    cost: float  # mean modeled seconds on the validation problems
    reached: bool  # whether it reached target-only's accuracy minus the margin
    candidates: int  # configurations the policy ran


def choose(points: list[Point], margin: float = 0.0) -> dict[str, Choice]:
    """The chosen configuration of each policy among `points` (validation points with mean_modeled set)."""
    target = next(p for p in points if p.policy == "target-only")
    goal = target.accuracy - margin - TOLERANCE
    out = {}
    for policy in sorted({p.policy for p in points}):
        pts = [p for p in points if p.policy == policy]
        ok = [p for p in pts if p.accuracy >= goal]
        best = (min(ok, key=lambda p: (p.mean_modeled, p.config)) if ok
                else min(pts, key=lambda p: (-p.accuracy, p.mean_modeled, p.config)))
        out[policy] = Choice(policy=policy, config=best.config, accuracy=best.accuracy, cost=best.mean_modeled or 0.0,
                             reached=bool(ok), candidates=len(pts))
    return out


def choose_runs(cfg: SweepConfig, runs: list[tuple[str, Any, Any]], val: list[EvalRecord],
                profile: LatencyProfile | None = None) -> list:
    """The runs (policy, threshold, rate) chosen on the validation records `val`, their modeled seconds
    from `profile` where given, else from one fitted on them."""
    from eval.latency import with_modeled_seconds

    points = summarize(with_modeled_seconds(val, profile)[0])
    chosen = {c.config for c in choose(points, cfg.select_margin).values()}
    return [run for run in runs if config_key(*run) in chosen]
