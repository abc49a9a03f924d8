"""Cascade (ConfSpec, arXiv 2602.18447): cheap gates first, the target's judge only for the steps the
gates cannot settle.

1. The draft verifies its own step (`gate=draft-judge`, the default, as ConfSpec: "step-level
   verification is a constrained discriminative task for which small draft models are well-calibrated
   within their competence range"): the SpecReason judge on the draft model, its score s in [0, 1].
   A confident verdict settles: keep when s >= `accept` (default 0.9), escalate when s <= `reject`
   (default 0.1). `gate=logprob` is the earlier variant, with no model call: the proposal's mean
   token log-probability, keep when >= `confident` (default -0.05), escalate when <= `doubtful`
   (default -inf: off). The draft's judge call is the judge stage's.
2. Optional, `arbitrage=DIR` (or `testbed` / `default`, the shipped routers): the Arbitrage router's
   P(target writes a better step). Keep when it is <= `low` (default 0.2); escalate when it is >=
   `high` (default 0.8). Its time is the router's.
3. Otherwise the judge (options judge, judge_options, as for specreason; the target by default): keep
   when its score >= tau.

tau in [0, 1]; default 7/9 (SpecReason's). A step's score is the target judge's where it ran, else None;
`gates` counts how each step was settled ("confident", "doubtful", "low", "high", "judge").
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

from judges import Judge
from judges.specreason import SpecReasonJudge
from reasoning.errors import ConfigError
from routers.base import Decision, StepContext
from routers.judged import JudgedRouter


class CascadeRouter(JudgedRouter):
    name = "cascade"
    default_threshold = 7 / 9

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, gate: Literal["draft-judge", "logprob"] = "draft-judge",
                 accept: float = 0.9, reject: float = 0.1, confident: float = -0.05, doubtful: float = -math.inf,
                 arbitrage: str | None = None, low: float = 0.2, high: float = 0.8):
        super().__init__(threshold, judge, judge_options)
        self.gate, self.accept, self.reject = gate, accept, reject
        self.confident, self.doubtful, self.low, self.high = confident, doubtful, low, high
        if gate not in ("draft-judge", "logprob"):
            raise ConfigError(f"router 'cascade': gate must be 'draft-judge' or 'logprob', got {gate!r}")
        if not 0.0 <= self.reject < self.accept <= 1.0:
            raise ConfigError(f"router 'cascade': need 0 <= reject < accept <= 1, got reject {self.reject}, "
                              f"accept {self.accept}")
        self.self_judge = SpecReasonJudge(model="draft") if gate == "draft-judge" else None
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
        if self.self_judge is not None:  # the draft grades its own step
            sure = self.self_judge.score(ctx, ctx.draft_text)
            keep, escalate = sure >= self.accept, sure <= self.reject
        else:
            stats = ctx.draft.stats()
            sure = stats.mean_logprob if stats is not None else None
            keep = sure is not None and sure >= self.confident
            escalate = sure is not None and sure <= self.doubtful
        if keep or escalate:
            self.gates["confident" if keep else "doubtful"] += 1
            return escalate
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
