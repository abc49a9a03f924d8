"""Aggregate evaluation records per (policy, threshold): accuracy with a Wilson 95% interval,
latency, target-token share, escalation rate; the Pareto frontier, the speedup over target-only
at matched accuracy, and an area score normalised between draft-only (0) and target-only (1)."""

from __future__ import annotations

import math
from collections import defaultdict

from pydantic import BaseModel

from eval.records import EvalRecord, config_key
from reasoning.types import STAGES


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


class Point(BaseModel):
    config: str
    policy: str
    threshold: float | None
    escalation_rate_goal: float | None
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_latency: float
    p90_latency: float
    target_token_share: float
    escalation_rate: float
    wasted_escalations: int
    format_failures: int  # no answer could be extracted
    seconds: dict[str, float]  # mean seconds per problem and stage
    mean_flops: float = 0.0  # estimated FLOPs per problem (2 x parameters x tokens, every stage)
    flops: dict[str, float] = {}  # mean FLOPs per problem and stage
    wasted_draft_tokens: float = 0.0  # mean draft tokens per problem thrown away
    judge_share: float = 0.0  # judge seconds over all stage seconds
    pareto: bool = False


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return 0.0
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(records: list[EvalRecord]) -> list[Point]:
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        groups[config_key(r.policy, r.threshold, r.escalation_rate_goal)].append(r)
    points = []
    for key, rs in groups.items():
        n = len(rs)
        k = sum(r.correct for r in rs)
        lo, hi = wilson(k, n)
        lat = [r.wall_seconds for r in rs]
        points.append(Point(
            config=key, policy=rs[0].policy, threshold=rs[0].threshold,
            escalation_rate_goal=rs[0].escalation_rate_goal, n=n, correct=k, accuracy=k / n, ci_low=lo,
            ci_high=hi, mean_latency=sum(lat) / n, p90_latency=quantile(lat, 0.9),
            target_token_share=sum(r.target_token_share for r in rs) / n,
            escalation_rate=sum(r.escalation_rate for r in rs) / n,
            wasted_escalations=sum(r.wasted_escalations for r in rs),
            format_failures=sum(r.extracted is None for r in rs),
            seconds={s: sum(r.costs.stage(s).seconds for r in rs) / n for s in STAGES},
            mean_flops=sum(r.costs.flops for r in rs) / n,
            flops={s: sum(r.costs.stage(s).flops for r in rs) / n for s in STAGES},
            wasted_draft_tokens=sum(r.costs.discarded.tokens for r in rs) / n,
            judge_share=_share(sum(r.costs.judge.seconds for r in rs), sum(r.costs.seconds for r in rs)),
        ))
    points.sort(key=lambda p: (p.policy, p.threshold if p.threshold is not None else -1.0, p.config))
    for p in pareto(points):
        p.pareto = True
    return points


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats on both accuracy (higher) and mean latency (lower)."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.mean_latency, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def latency_at_accuracy(points: list[Point], goal: float, cost: str = "mean_latency") -> float | None:
    """Lowest mean cost (`cost`: mean_latency or mean_flops) at which the policy's curve (points by
    cost, linear between them) reaches `goal` accuracy; None when it never does."""
    pts = sorted(points, key=lambda p: getattr(p, cost))
    prev = None
    for p in pts:
        if p.accuracy >= goal:
            if prev is None or prev.accuracy >= goal:
                return getattr(p, cost)
            f = (goal - prev.accuracy) / (p.accuracy - prev.accuracy)
            return getattr(prev, cost) + f * (getattr(p, cost) - getattr(prev, cost))
        prev = p
    return None


def area_score(points: list[Point], draft_acc: float, target_acc: float) -> float | None:
    """Area under (accuracy - draft) / (target - draft) against the escalation rate on [0, 1], with
    draft-only at (0, 0) and target-only at (1, 1), as RouteLLM's APGR. None unless target-only is
    more accurate than draft-only: there is no gap to recover otherwise."""
    if target_acc <= draft_acc or math.isclose(target_acc, draft_acc):
        return None
    best: dict[float, float] = {0.0: 0.0, 1.0: 1.0}
    for p in points:
        x = min(1.0, max(0.0, p.escalation_rate))
        y = (p.accuracy - draft_acc) / (target_acc - draft_acc)
        best[x] = max(best.get(x, -math.inf), y)
    xs = sorted(best)
    return sum((xs[i + 1] - xs[i]) * (best[xs[i]] + best[xs[i + 1]]) / 2 for i in range(len(xs) - 1))
