"""Handoff (R-Stitch, Chen et al., arXiv 2507.17307): the two models write one step together, passing control
at the tokens where the writer's uncertainty crosses a threshold.

`way=two` (the default, R-Stitch): the draft writes the step token by token; at its first token whose
next-token entropy is above tau, that token is dropped (thrown away) and the target writes from there,
until a token of its own has entropy <= `back` (default tau, the paper's single threshold): that token is
kept and control passes back to the draft, which goes on; so control can pass several times within a
step, until the step ends (delimiter, end of sequence, the step's token cap). The decision is taken as
tokens are written, so no draft tail is written and thrown away (only the one uncertain token each time),
and both models keep their KV cache and read only what the other wrote (exactly its token ids: the two
models must share a vocabulary; engines whose sessions take `switch`: transformers, llama.cpp).
`normalized=true` divides entropies by log(vocabulary size) (the paper's later versions), so tau and back
are in [0, 1) and the threshold must be given. A step the target wrote part of is a partial escalation
(`Step.handoff_tokens`: the draft's tokens in it). Score: the largest draft entropy met in the step (the
dropped tokens' included).

`way=one` (the variant kept from before): the draft writes its whole step first; at its first token whose
uncertainty exceeds tau (entropy in nats, `signal=entropy`, or surprise, -log p(token), `signal=surprise`)
the proposal's tokens before that point stay, exactly, at the start of the step and the target writes the
rest of it; the draft's tokens after the point are thrown away. A handoff point inside the delimiter
moves back before it. Score: the step's largest uncertainty.

tau in [0, 20] (nats); default 1.0. On the testbed pair, entropies are small (hundredths to a few tenths of
a nat).
"""


from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

from reasoning.backends.base import Generation, Switch, joined
from reasoning.context import Piece
from reasoning.errors import ConfigError
from routers.base import BaseRouter, Candidate, Decision, StepContext


class HandoffRouter(BaseRouter):
    name = "handoff"
    threshold_range = (0.0, 20.0)
    default_threshold = 1.0
    escalate_above = True

    def __init__(self, threshold: float | None = None, signal: Literal["entropy", "surprise"] = "entropy",
                 way: Literal["two", "one"] = "two", back: float | None = None, normalized: bool = False):
        super().__init__(threshold)
        if back is not None and not 0.0 <= back <= 20.0:
            raise ConfigError(f"router 'handoff': back must be between 0 and 20, got {back}")
        if way == "two" and signal != "entropy":
            raise ConfigError("router 'handoff': way=two switches on entropy (R-Stitch); signal=surprise needs way=one")
        if normalized and way == "one":
            raise ConfigError("router 'handoff': normalized entropies need way=two")
        if normalized and (threshold is None or threshold >= 1.0 or (back is not None and back >= 1.0)):
            raise ConfigError("router 'handoff': normalized=true needs a threshold (and back) below 1: an entropy "
                              "over log(vocabulary size) is at most 1")
        self.signal, self.way, self.back, self.normalized = signal, way, back, normalized
        self.proposes = way == "one"  # two-way writes the step itself
        self.start()

    def start(self) -> None:
        self.kept: list[tuple[int, str]] = []  # (tokens, text) of the proposal kept at each handoff
        self.handoffs: list[int] = []  # two-way: times the draft handed the step to the target, per step

    def uncertainties(self, ctx: StepContext) -> list[float]:
        gen = ctx.draft
        return list(gen.entropies) if self.signal == "entropy" else [-lp for lp in gen.logprobs]

    def score(self, ctx: StepContext) -> float:
        return max(self.uncertainties(ctx), default=0.0)

    def route(self, ctx: StepContext) -> Decision:
        if self.way == "two":
            return self._two_way(ctx)
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
        step = joined(Generation(prefix, ctx.draft.token_ids[:n], ctx.draft.logprobs[:n], ctx.draft.entropies[:n],
                                 "length", None), rest) if n else rest  # the proposal's head, then the target's
        return Decision(escalate=True, score=s, step=Candidate("target", step, n), threshold=tau)

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

    def _two_way(self, ctx: StepContext) -> Decision:
        """R-Stitch: write the step, passing control at each entropy crossing; each model continues with
        its KV and reads only what the other wrote since."""
        draft, target = ctx.backend("draft"), ctx.backend("target")
        if getattr(draft, "vocab_key", None) is None or draft.vocab_key != getattr(target, "vocab_key", None):
            raise ConfigError("router 'handoff': way=two passes token ids between the models, which must share a "
                              "vocabulary; use way=one")
        for m in ("draft", "target"):
            if not getattr(ctx.session(m), "can_switch", False):
                raise ConfigError(f"router 'handoff': way=two needs sessions that pass control at a token "
                                  f"(transformers, llama.cpp); {ctx.backend(m).name} has none; use way=one")
        tau = self.effective_threshold(ctx)
        back = tau if self.back is None else self.back
        switch = {"draft": Switch(tau, True, self.normalized), "target": Switch(back, False, self.normalized)}
        scale = 1.0  # the score in the thresholds' unit
        if self.normalized:
            if not hasattr(draft, "n_vocab"):
                raise ConfigError(f"router 'handoff': normalized=true needs the vocabulary size, which {draft.name} "
                                  "does not give")
            scale = math.log(draft.n_vocab)
        pieces: list[Piece] = []
        parts: list[Generation] = []
        model, used, by_draft, score, handoffs = "draft", 0, 0, 0.0, 0
        end: tuple[str, str | None] = ("length", None)  # how the step ended: the last call's finish and stop
        while used < ctx.step_cap:
            lead = draft.decode([i for p in pieces for i in p.ids]) if pieces else ""  # a delimiter can span parts
            gen = ctx.write_step(model, prefix=pieces, switch=replace(switch[model], lead=lead),
                                 max_tokens=ctx.step_cap - used)
            switched, end = gen.finish_reason == "switch", (gen.finish_reason, gen.stop)
            if model == "draft":
                score = max([score, *(e / scale for e in gen.entropies)])
            if model == "draft" and switched:  # the uncertain token is the target's to write
                gen = self._drop_last(ctx, gen)
                handoffs += 1
            else:
                ctx.report(model, gen.usage)
            if gen.token_ids:
                parts.append(gen)
                pieces.append(Piece(gen.text, model, tuple(gen.token_ids)))
                used += len(gen.token_ids)
                by_draft += len(gen.token_ids) if model == "draft" else 0
            if not switched:
                break
            model = "target" if model == "draft" else "draft"
        self.handoffs.append(handoffs)
        ids = [i for g in parts for i in g.token_ids]
        # decoded together, not joined: a part alone can split a character or lose its leading space
        step = Generation(draft.decode(ids) if ids else "", ids,
                          [x for g in parts for x in g.logprobs], [x for g in parts for x in g.entropies], *end)
        if by_draft == len(step.token_ids):
            return Decision(escalate=False, score=score, proposal=step, threshold=tau)
        return Decision(escalate=True, score=score, step=Candidate("target", step, by_draft), threshold=tau)

    @staticmethod
    def _drop_last(ctx: StepContext, gen: Generation) -> Generation:
        """The draft's generation without its last token (thrown away), reporting both parts."""
        kept, thrown = gen.usage.split_outputs(1)
        ctx.report("draft", kept)
        ctx.report("draft", thrown, thrown_away=True, calls=0)
        ids = gen.token_ids[:-1]
        text = ctx.backend("draft").decode(ids) if ids else ""
        return Generation(text, ids, gen.logprobs[:-1], gen.entropies[:-1], "switch", None)
