"""Base for routers that ask a judge about the draft step."""

from __future__ import annotations

from typing import Any

from judges import Judge, make_judge
from reasoning.backends.base import Generation
from routers.base import BaseRouter, Decision, StepContext, same_step


class JudgedRouter(BaseRouter):
    """Keep the draft step when the judge's score >= tau; escalate otherwise.

    Options: judge (a name from judges.JUDGES or a Judge), judge_options (dict), audit (bool: after
    an escalation, also judge the target's step, to record whether the escalation was wasted)."""

    default_judge = "specreason"
    escalate_above = False

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, audit: bool = False):
        super().__init__(threshold)
        self.judge = make_judge(judge or self.default_judge, **(judge_options or {}))
        self.reviews = audit

    def score(self, ctx: StepContext) -> float:
        return self.judge.score(ctx, ctx.draft_text)

    def review(self, ctx: StepContext, decision: Decision, target: Generation) -> None:
        text = ctx.step_text(target)
        if same_step(text, ctx.draft_text):  # the target wrote the draft's step again: a tie, no judge call
            decision.target_score = decision.score
        else:
            decision.target_score = self.judge.score(ctx, text)
        decision.wasted = decision.target_score <= decision.score
