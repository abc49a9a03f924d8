"""Lookahead (Lookahead Reasoning-style, hao-ai-lab/LookaheadReasoning): the draft writes up to k steps
ahead, the judge checks them all in one call, the longest prefix of good steps is kept.

From the accepted prefix the draft writes steps 1..k, each after the ones before it (it stops early
at a final answer or the end of the solution). The judge (`score_chain`; the SpecReason judge reads
all k in one forward pass on transformers, with a tree attention mask) scores step j after steps
1..j-1. Steps 1..m with score >= tau are kept, one per controller step, with no further model call;
step m+1 is escalated (the target writes it). The drafted steps after m+1 are thrown away.
Options: k (>= 1, default 3), judge, judge_options (as for specreason; the judge must have
`score_chain`). tau in [0, 1]; default 7/9 (SpecReason's). k=1 judges like specreason.
"""

from __future__ import annotations

from typing import Any

from judges import Judge
from reasoning.answers import has_final_answer
from reasoning.backends.base import Generation, Usage
from reasoning.errors import ConfigError
from routers.base import Decision, StepContext
from routers.judged import JudgedRouter

Queued = tuple[Generation, float, bool]  # a step drafted ahead, its score, whether it escalates


class LookaheadRouter(JudgedRouter):
    name = "lookahead"
    default_threshold = 7 / 9
    proposes = False  # the router drafts its own steps, k at a time

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, k: int = 3):
        super().__init__(threshold, judge, judge_options)
        if k < 1:
            raise ConfigError(f"router 'lookahead': k must be >= 1, got {k}")
        self.k = k
        if not callable(getattr(self.judge, "score_chain", None)):
            raise ConfigError(f"router 'lookahead': judge {self.judge.name!r} cannot score steps ahead "
                              "(it has no score_chain); use specreason")
        self.start()

    def start(self) -> None:
        self._ahead: dict[tuple[str, ...], list[Queued]] = {}  # planned steps, by the accepted steps before them
        self.rounds: list[tuple[int, int]] = []  # (steps drafted, steps kept) per judge call
        self._dropped: list[Usage] = []  # planned steps not served (the step's token cap shrank)

    @staticmethod
    def _key(ctx: StepContext, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        return (*(s.text for s in ctx.steps), *extra)

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        queued = self._ahead.pop(self._key(ctx), None)
        if queued and len(queued[0][0].token_ids) <= ctx.step_cap:
            return self._serve(ctx, queued, tau)
        self._dropped += [g.usage for g, _, escalate in queued or () if not escalate]
        drafts: list[Generation] = []
        pieces: list[str] = []
        for _ in range(self.k):  # each step drafted after the ones before it, as the draft wrote them
            gen = ctx.write_step("draft", prefix=[ctx.piece("draft", g) for g in drafts])
            drafts.append(gen)
            pieces.append(ctx.step_piece(gen))
            if gen.finish_reason == "eos" or has_final_answer(ctx.step_text(gen)):
                break
        scores = self.judge.score_chain(ctx, pieces)
        good = next((j for j, s in enumerate(scores) if not s >= tau), len(scores))
        self.rounds.append((len(drafts), good))
        for j, gen in enumerate(drafts):
            ctx.report("draft", gen.usage, thrown_away=j >= good)
        plan: list[Queued] = [(g, s, j == good) for j, (g, s) in enumerate(zip(drafts, scores)) if j <= good]
        return self._serve(ctx, plan, tau)

    def leftover(self) -> list[Usage]:
        """Planned steps never served: dropped, or still waiting when the solve ended (a drafted step that
        was to escalate is counted as thrown away already)."""
        return self._dropped + [g.usage for plan in self._ahead.values() for g, _, escalate in plan if not escalate]

    def _serve(self, ctx: StepContext, plan: list[Queued], tau: float) -> Decision:
        """The first planned step now; the rest wait for the steps before them to be committed."""
        (gen, score, escalate), rest = plan[0], plan[1:]
        if rest and not escalate:
            self._ahead[self._key(ctx, (ctx.step_text(gen),))] = rest
        return Decision(escalate=escalate, score=score, draft=gen, threshold=tau)
