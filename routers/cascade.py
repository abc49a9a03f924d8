"""Cascade (ConfSpec-style, arXiv 2602.18447): cheap gates first, the judge only for the steps the
gates cannot settle.

1. The draft's own confidence: the proposal's mean token log-probability (no model call). Keep the
   step when it is >= `confident` (default -0.05); escalate when it is <= `doubtful` (default -inf:
   off).
2. Optional, `arbitrage=DIR` (or `testbed` / `default`, the shipped routers): the Arbitrage router's
   P(target writes a better step). Keep when it is <= `low` (default 0.2); escalate when it is >=
   `high` (default 0.8). Its time is the router's.
3. Otherwise the judge (options judge, judge_options, as for specreason): keep when its score >= tau.

tau in [0, 1]; default 7/9 (SpecReason's). A step's score is the judge's where it ran, else None;
`gates` counts how each step was settled ("confident", "doubtful", "low", "high", "judge").
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from judges import Judge
from reasoning.errors import ConfigError
from routers.base import Decision, StepContext
from routers.judged import JudgedRouter


class CascadeRouter(JudgedRouter):
    name = "cascade"
    default_threshold = 7 / 9

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, confident: float = -0.05,
                 doubtful: float = -math.inf, arbitrage: str | None = None, low: float = 0.2, high: float = 0.8):
        super().__init__(threshold, judge, judge_options)
        self.confident, self.doubtful, self.low, self.high = confident, doubtful, low, high
        if self.doubtful >= self.confident:
            raise ConfigError(f"router 'cascade': doubtful ({self.doubtful}) must be below confident "
                              f"({self.confident})")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ConfigError(f"router 'cascade': need 0 <= low < high <= 1, got low {self.low}, high {self.high}")
        self.arbitrage = None
        if arbitrage is not None and arbitrage.strip():
            from routers.arbitrage import ArbitrageRouter

            self.arbitrage = ArbitrageRouter(0.5, model=arbitrage.strip())
        self.start()

    def start(self) -> None:
        self.gates: Counter[str] = Counter()  # how this solve's steps were settled

    def _gate(self, ctx: StepContext) -> bool | None:
        """True: escalate, False: keep, None: the gates cannot tell."""
        stats = ctx.draft.stats()
        if stats is not None:
            if stats.mean_logprob >= self.confident:
                self.gates["confident"] += 1
                return False
            if stats.mean_logprob <= self.doubtful:
                self.gates["doubtful"] += 1
                return True
        if self.arbitrage is not None:
            p = self.arbitrage.score(ctx)
            if p <= self.low:
                self.gates["low"] += 1
                return False
            if p >= self.high:
                self.gates["high"] += 1
                return True
        return None

    def route(self, ctx: StepContext) -> Decision:
        if ctx.draft is None or ctx.draft_text is None:
            raise RuntimeError("the cascade needs the draft's proposal")
        tau = self.effective_threshold(ctx)
        settled = self._gate(ctx)
        if settled is not None:
            return Decision(escalate=settled, threshold=tau)
        self.gates["judge"] += 1
        s = self.judge.score(ctx, ctx.draft_text)
        return Decision(escalate=self.decide(s, tau), score=s, threshold=tau)
