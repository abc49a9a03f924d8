"""The oracle: write both steps from the same prefix, judge both, keep the better. It pays for
both (every token is accounted) and is the upper bound of step routing and the label source."""

from __future__ import annotations

from typing import Any

from judges import Judge
from routers.base import Candidate, Decision, StepContext, same_step, target_better
from routers.judged import JudgedRouter


class OracleRouter(JudgedRouter):
    """Keep the target's step when (target score - draft score) > tau. tau in [-1, 1]; default 0."""

    name = "oracle"
    threshold_range = (-1.0, 1.0)
    default_threshold = 0.0
    default_judge = "specreason"
    escalate_above = True

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None):
        super().__init__(threshold, judge, judge_options)

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        draft_score = self.judge.score(ctx, ctx.draft_text)
        target = ctx.write_step("target")  # the controller appends it if it is kept
        ctx.report("target", target.usage)
        text = ctx.step_text(target)
        # the same step written twice is a tie by definition: no second judge call, keep the draft
        target_score = draft_score if same_step(text, ctx.draft_text) else self.judge.score(ctx, text)
        escalate = target_better(target_score, draft_score, tau)
        return Decision(escalate=escalate, score=draft_score, step=Candidate("target", target) if escalate else None,
                        target_score=target_score,
                        wasted=(target_score <= draft_score) if escalate else None, threshold=tau)
