"""First token (GlimpRouter-style, arXiv 2601.05110): decide who writes a step before it is written.

The draft writes one token from the accepted prefix; the entropy (nats) of its next-token
distribution there is the score. Escalate when the score > tau: the target writes the step;
otherwise the draft writes it. The probe is charged to the draft; its token is counted as thrown
away (the kept step writes it again), its prefill is not (the kept step reuses the cached prefix).
tau in [0, 20] nats; default 1.0. On the testbed pair first-token entropies are tiny (median 0.003
nats): thresholds there are hundredths.
"""

from __future__ import annotations

from reasoning.backends.base import Usage
from routers.base import BaseRouter, Decision, StepContext


class FirstTokenRouter(BaseRouter):
    name = "first-token"
    proposes = False  # the decision comes before the draft's step
    threshold_range = (0.0, 20.0)
    default_threshold = 1.0
    escalate_above = True

    def score(self, ctx: StepContext) -> float:
        probe = ctx.write_step("draft", max_tokens=1)
        u = probe.usage
        token = u.outputs(u.output_tokens)
        ctx.report("draft", Usage(u.input_tokens, 0, u.seconds - token.seconds, u.flops - token.flops))  # the prefill
        ctx.report("draft", token, thrown_away=True, calls=0)
        return probe.entropies[0] if probe.entropies else 0.0

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        s = self.score(ctx)
        if self.decide(s, tau):
            return Decision(escalate=True, score=s, threshold=tau)
        step = ctx.write_step("draft")
        ctx.report("draft", step.usage)
        return Decision(escalate=False, score=s, draft=step, threshold=tau)
