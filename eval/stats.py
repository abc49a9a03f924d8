"""Paired statistics for a sweep. Every configuration ran on the same problems, so comparisons pair
records by problem: an exact McNemar test for accuracy against a reference, and a paired bootstrap over
problems of the whole pipeline (per-configuration means, the policy's cost-accuracy curve, the
interpolation at the reference's accuracy, the ratio) for 95% intervals of speedups and area scores.

A problem solved several times (`--repeats`) counts once: its repeats are averaged before resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((0, 0) when n is 0)."""
    if n == 0:
        return 0.0, 0.0
    ci = stats.binomtest(k, n).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two paired success lists: `only_a` problems only a got right, `only_b` only b."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """Exact (binomial) McNemar test on paired outcomes; a problem's outcome is right when its mean over
    repeats is at least one half."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} and {len(b)}")
    ra, rb = [x >= 0.5 for x in a], [x >= 0.5 for x in b]
    only_a = sum(x and not y for x, y in zip(ra, rb))
    only_b = sum(y and not x for x, y in zip(ra, rb))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def cost_at_accuracy(costs: Sequence[float], accs: Sequence[float], goal: float) -> float | None:
    """The lowest cost at which a curve (points by cost, linear between them) reaches `goal` accuracy;
    None when it never does."""
    prev: tuple[float, float] | None = None
    for c, a in sorted(zip(costs, accs)):
        if a >= goal:
            if prev is None or prev[1] >= goal:
                return c
            f = (goal - prev[1]) / (a - prev[1])
            return prev[0] + f * (c - prev[0])
        prev = (c, a)
    return None


def area(rates: Sequence[float], accs: Sequence[float], draft_acc: float, target_acc: float) -> float | None:
    """Area under (accuracy - draft) / (target - draft) against the escalation rate on [0, 1], with
    draft-only at (0, 0) and target-only at (1, 1), as RouteLLM's APGR; None without a gap to recover."""
    if target_acc <= draft_acc or math.isclose(target_acc, draft_acc):
        return None
    best: dict[float, float] = {0.0: 0.0, 1.0: 1.0}
    for r, a in zip(rates, accs):
        x = min(1.0, max(0.0, r))
        best[x] = max(best.get(x, -math.inf), (a - draft_acc) / (target_acc - draft_acc))
    xs = sorted(best)
    return sum((xs[i + 1] - xs[i]) * (best[xs[i]] + best[xs[i + 1]]) / 2 for i in range(len(xs) - 1))


@dataclass(frozen=True)
class Paired:
    """Per-problem values of each configuration, problems in the same order for every configuration:
    `values[metric]` has shape (configurations, problems); repeats are already averaged."""

    configs: list[str]
    problems: list[str]
    values: dict[str, np.ndarray]

    def row(self, config: str) -> int:
        return self.configs.index(config)


def paired(rows: Sequence[tuple[str, str, dict[str, float]]]) -> Paired:
    """Pair (config, problem id, {metric: value}) rows by problem: the problems every configuration
    ran (a problem some configuration lacks is left out), repeats averaged."""
    sums: dict[tuple[str, str], dict[str, float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for config, problem, vals in rows:
        acc = sums.setdefault((config, problem), dict.fromkeys(vals, 0.0))
        for k, v in vals.items():
            acc[k] += v
        counts[(config, problem)] = counts.get((config, problem), 0) + 1
    configs = sorted({c for c, _ in sums})
    problems = sorted({p for _, p in sums})
    problems = [p for p in problems if all((c, p) in sums for c in configs)]
    metrics = sorted({k for v in sums.values() for k in v})
    values = {m: np.array([[sums[(c, p)][m] / counts[(c, p)] for p in problems] for c in configs], dtype=float)
              for m in metrics}
    return Paired(configs, problems, values)


@dataclass(frozen=True)
class Estimate:
    """A statistic on the data and its paired-bootstrap percentile interval. `missing` is the share of
    resamples in which the statistic was undefined (a curve that never reaches the goal); those count
    as 0 for a ratio, so they pull the interval's low end down rather than vanish."""

    value: float | None
    low: float | None
    high: float | None
    missing: float = 0.0

    def excludes(self, x: float) -> bool:
        """Whether the interval lies wholly on one side of x (a claim against x is supported)."""
        return self.low is not None and self.high is not None and (self.low > x or self.high < x)


class Resampler:
    """Paired bootstrap resamples of a `Paired` table: `n_boot` draws of the problems with replacement (the
    same problems for every configuration), each configuration's mean per draw computed once and shared by
    every statistic estimated on them."""

    def __init__(self, data: Paired, n_boot: int = 2000, seed: int = 0):
        self.data, self.n_boot = data, n_boot
        n = len(data.problems)
        self.means = {m: v.mean(axis=1) for m, v in data.values.items()}
        counts = np.zeros((n_boot, n))
        if n:
            idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
            np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
        # (configs, n_boot): the mean of each configuration in each draw
        self.resampled = {m: v @ counts.T / max(n, 1) for m, v in data.values.items()}

    def estimate(self, statistic: Callable[[dict[str, np.ndarray]], float | None], fill: float | None = 0.0,
                 level: float = LEVEL) -> Estimate:
        """`statistic` of the per-configuration means, on the data and on every draw. `statistic` takes
        {metric: array of per-configuration means} and may return None; draws where it does count as
        `fill` (None: left out)."""
        value = statistic(self.means)
        if not self.data.problems:
            return Estimate(value, None, None, 1.0)
        out, missing = [], 0
        for b in range(self.n_boot):
            s = statistic({m: v[:, b] for m, v in self.resampled.items()})
            if s is None or (isinstance(s, float) and math.isnan(s)):
                missing += 1
                if fill is None:
                    continue
                s = fill
            out.append(s)
        if not out:
            return Estimate(value, None, None, 1.0)
        tail = (1 - level) / 2 * 100
        lo, hi = np.percentile(out, [tail, 100 - tail])
        return Estimate(value, float(lo), float(hi), missing / self.n_boot)


def bootstrap(data: Paired, statistic: Callable[[dict[str, np.ndarray]], float | None], n_boot: int = 2000,
              seed: int = 0, fill: float | None = 0.0, level: float = LEVEL) -> Estimate:
    """One statistic's paired-bootstrap estimate (`Resampler(data, n_boot, seed).estimate(...)`)."""
    return Resampler(data, n_boot, seed).estimate(statistic, fill, level)
