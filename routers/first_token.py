"""First token (GlimpRouter, arXiv 2601.05110): decide who writes a step before it is written.

The draft writes one token from the accepted prefix; the entropy (nats) of its next-token
distribution there is the score. Escalate when the score > tau: the target writes the step and the
probe token is thrown away; otherwise the draft continues the probe into its step (the probe is the
step's first token, not written again). The probe's call is the draft's.
tau in [0, 20] nats; default 1.0. On the testbed pair first-token entropies are tiny (median 0.003
nats): thresholds there are hundredths.
"""

from __future__ import annotations

from reasoning.backends.base import Generation, joined
from reasoning.context import Piece
from routers.base import BaseRouter, Decision, StepContext


class FirstTokenRouter(BaseRouter):
    name = "first-token"
    proposes = False  # the decision comes before the draft's step
    threshold_range = (0.0, 20.0)
    default_threshold = 1.0
    escalate_above = True

    def probe(self, ctx: StepContext) -> tuple[Generation, float]:
        """The draft's first token of the step (not reported yet) and its entropy."""
        probe = ctx.write_step("draft", max_tokens=1)
        return probe, probe.entropies[0] if probe.entropies else 0.0

    def score(self, ctx: StepContext) -> float:
        probe, s = self.probe(ctx)
        ctx.report("draft", probe.usage, thrown_away=True)
        return s

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        probe, s = self.probe(ctx)
        prefill, token = probe.usage.split_outputs(probe.usage.output_tokens)
        ctx.report("draft", prefill)
        if self.decide(s, tau):
            ctx.report("draft", token, thrown_away=True, calls=0)
            return Decision(escalate=True, score=s, threshold=tau)
        ctx.report("draft", token, calls=0)  # the step's first token
        if probe.finish_reason != "length":  # the probe ended the step (a stop string or the end)
            return Decision(escalate=False, score=s, proposal=probe, threshold=tau)
        head = Piece(probe.text, "draft", tuple(probe.token_ids))
        rest = ctx.write_step("draft", prefix=[head], max_tokens=max(1, ctx.step_cap - len(probe.token_ids)))
        ctx.report("draft", rest.usage)
        return Decision(escalate=False, score=s, proposal=joined(probe, rest), threshold=tau)
