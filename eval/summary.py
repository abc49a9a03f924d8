"""Aggregate evaluation records per (policy, threshold): accuracy with a Wilson 95% interval,
latency, target-token share, escalation rate; the Pareto frontier, the speedup over target-only
at matched accuracy, and an area score normalised between draft-only (0) and target-only (1)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel

from eval.records import EvalRecord, config_key
from eval.stats import area, cost_at_accuracy, wilson
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
    wasted_draft_tokens: float = 0.0  # mean draft tokens per problem written and thrown away (output tokens)
    wasted_draft_input: float = 0.0  # mean input tokens per problem the draft read for steps thrown away
    judge_share: float = 0.0  # judge seconds over all stage seconds
    mean_modeled: float | None = None  # modeled seconds per problem (eval.latency), where records have them
    pareto: bool = False
    # paired with target-only on the same problems: accuracy difference (a fraction) with its paired-bootstrap
    # 95% interval, the exact McNemar p-value, and the margin d such that the interval's low end is >= -d
    diff_vs_target: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    mcnemar_p: float | None = None
    noninferior_within: float | None = None
    # target-only's mean cost over this configuration's, per cost (wall, flops, modeled), with its interval
    cost_vs_target: dict[str, dict] = {}


def quantile(xs: list[float], q: float) -> float:
    return float(np.quantile(xs, q)) if xs else 0.0


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
            wasted_draft_tokens=sum(r.costs.discarded.output_tokens for r in rs) / n,
            wasted_draft_input=sum(r.costs.discarded.input_tokens for r in rs) / n,
            judge_share=_share(sum(r.costs.judge.seconds for r in rs), sum(r.costs.seconds for r in rs)),
            mean_modeled=(None if any(r.modeled_seconds is None for r in rs)
                          else sum(r.modeled_seconds for r in rs) / n),
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
    """Lowest mean cost (`cost`: mean_latency, mean_flops or mean_modeled) at which the policy's curve
    (points by cost, linear between them) reaches `goal` accuracy; None when it never does."""
    return cost_at_accuracy([getattr(p, cost) for p in points], [p.accuracy for p in points], goal)


def area_score(points: list[Point], draft_acc: float, target_acc: float) -> float | None:
    """Area under (accuracy - draft) / (target - draft) against the escalation rate on [0, 1], with
    draft-only at (0, 0) and target-only at (1, 1), as RouteLLM's APGR. None unless target-only is
    more accurate than draft-only: there is no gap to recover otherwise."""
    return area([p.escalation_rate for p in points], [p.accuracy for p in points], draft_acc, target_acc)
