"""Handoff (R-Stitch-style, arXiv 2507.17307): the target takes over mid-step, keeping the draft's prefix.

The draft writes its step; the handoff point is its first token whose uncertainty exceeds tau:
entropy of the next-token distribution in nats (`signal=entropy`, the default) or surprise,
-log p(token) (`signal=surprise`). With no such token the draft's step is kept. Otherwise the
proposal's tokens before that point stay, exactly, at the start of the step and the target writes
the rest of it (within the step's token cap); only the draft's tokens after the point are thrown
away. A handoff point inside the delimiter moves back before it. The score is the step's largest
uncertainty (escalate = hand off when score > tau). tau in [0, 20]; default 1.0. On the testbed
pair, entropies are small (hundredths to a few tenths of a nat).
"""

from __future__ import annotations

from typing import Literal

from routers.base import BaseRouter, Decision, StepContext


class HandoffRouter(BaseRouter):
    name = "handoff"
    threshold_range = (0.0, 20.0)
    default_threshold = 1.0
    escalate_above = True

    def __init__(self, threshold: float | None = None, signal: Literal["entropy", "surprise"] = "entropy"):
        super().__init__(threshold)
        self.signal = signal
        self.start()

    def start(self) -> None:
        self.kept: list[tuple[int, str]] = []  # (tokens, text) of the proposal kept at each handoff

    def uncertainties(self, ctx: StepContext) -> list[float]:
        gen = ctx.draft
        return list(gen.entropies) if self.signal == "entropy" else [-lp for lp in gen.logprobs]

    def score(self, ctx: StepContext) -> float:
        return max(self.uncertainties(ctx), default=0.0)

    def route(self, ctx: StepContext) -> Decision:
        if ctx.draft is None:
            raise RuntimeError("handoff needs the draft's proposal")
        tau = self.effective_threshold(ctx)
        u = self.uncertainties(ctx)
        at = next((i for i, x in enumerate(u) if self.decide(x, tau)), None)
        s = max(u, default=0.0)
        if at is None:
            return Decision(escalate=False, score=s, threshold=tau)
        n, prefix = self._prefix(ctx, at)
        head = ctx.draft_head(n) if n else None  # the draft's own token ids where the target shares them
        rest = ctx.write_step("target", prefix=[head] if head else "", max_tokens=max(1, ctx.step_cap - n))
        ctx.report("target", rest.usage)
        self.kept.append((n, prefix))
        return Decision(escalate=True, score=s, target=rest, handoff=n or None, threshold=tau)

    @staticmethod
    def _prefix(ctx: StepContext, at: int) -> tuple[int, str]:
        """The proposal's first tokens before `at` that decode to a prefix of its text and do not end
        inside the delimiter: (tokens, text)."""
        delim = ctx.limits.delimiter
        for n in range(at, 0, -1):
            try:
                text = ctx.draft_prefix(n)
            except ValueError:
                continue
            if not any(text.endswith(delim[:j]) for j in range(1, len(delim) + 1)):
                return n, text
        return 0, ""
