"""Lookahead (Lookahead Reasoning, Fu et al. 2025; hao-ai-lab/LookaheadReasoning, src/lr.py, src/lr_tree.py):
the draft writes up to k steps ahead, the target writes its own step at each drafted prefix, and the
longest prefix of drafted steps that say what the target's say is kept.

`verify=aligned` (the default, the paper's): from the accepted prefix the draft writes steps 1..k, each
after the ones before it (stopping early at a final answer or the end of the solution); the target
writes its own step j after drafted steps 1..j-1, for every j, side by side in one batched call on the
transformers engine (sessions forked from the accepted prefix; elsewhere one call after another). A
verifier compares drafted step j with the target's step j: equal text (without spaces and newlines,
case folded) is accepted at once, otherwise a model (`verifier=target`, the default; `draft`; `none`:
the exact comparison only) answers aligned/unaligned (judges/aligned.py, the repository's prompt) and
the step is accepted when the probability of "aligned" is >= tau (default 0.5: the repository's one
greedy token). Steps 1..m are kept, one per controller step, with no further model call; at the first
mismatch the target's own step m+1, already written, follows. The target's steps at the accepted
positions are its verification work (target tokens, not kept). A drafted step cut by the token cap is
never accepted (the repository accepts only ended steps).

`verify=score` (k-step SpecReason): the judge (`score_chain`; the SpecReason judge reads all k drafted
steps in one forward pass on transformers, with a tree attention mask) scores step j after steps
1..j-1; steps with score >= tau (default 7/9) are kept and the target writes the first bad one.

Options: k (>= 1, default 3), verify, verifier, judge and judge_options (verify=score; the judge must
have `score_chain`). tau in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from judges import Judge
from judges.aligned import AlignedJudge
from reasoning.answers import has_final_answer
from reasoning.backends.base import Generation, Usage
from reasoning.errors import ConfigError
from routers.base import Candidate, Decision, StepContext, report_written
from routers.judged import JudgedRouter


@dataclass
class Planned:
    """A step decided ahead: the drafted step, its score, and whether it escalates (with the target's step
    already written, under verify=aligned)."""

    draft: Generation
    score: float
    escalate: bool
    target: Generation | None = None


class LookaheadRouter(JudgedRouter):
    name = "lookahead"
    default_threshold = None  # by verify: 0.5 (aligned), 7/9 (score)
    proposes = False  # the router drafts its own steps, k at a time

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, k: int = 3,
                 verify: Literal["aligned", "score"] = "aligned",
                 verifier: Literal["target", "draft", "none"] = "target"):
        if threshold is None:
            threshold = 0.5 if verify == "aligned" else 7 / 9
        super().__init__(threshold, judge, judge_options)
        if k < 1:
            raise ConfigError(f"router 'lookahead': k must be >= 1, got {k}")
        self.k, self.verify = k, verify
        self.aligned = AlignedJudge(verifier)
        if verify == "score" and not callable(getattr(self.judge, "score_chain", None)):
            raise ConfigError(f"router 'lookahead': judge {self.judge.name!r} cannot score steps ahead "
                              "(it has no score_chain); use specreason")
        self.start()

    def start(self) -> None:
        self._ahead: dict[tuple[str, ...], list[Planned]] = {}  # planned steps, by the accepted steps before them
        self.rounds: list[tuple[int, int]] = []  # (steps drafted, steps kept) per round
        self._dropped: list[Usage] = []  # planned steps not served (the step's token cap shrank)

    @staticmethod
    def _key(ctx: StepContext, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        return (*(s.text for s in ctx.steps), *extra)

    def route(self, ctx: StepContext) -> Decision:
        tau = self.effective_threshold(ctx)
        queued = self._ahead.pop(self._key(ctx), None)
        if queued and all(g is None or len(g.token_ids) <= ctx.step_cap for g in (queued[0].draft, queued[0].target)):
            return self._serve(ctx, queued, tau)
        self._dropped += [p.draft.usage for p in queued or () if not p.escalate]
        drafts: list[Generation] = []
        for _ in range(self.k):  # each step drafted after the ones before it, as the draft wrote them
            gen = ctx.write_step("draft", prefix=[ctx.piece("draft", g) for g in drafts])
            drafts.append(gen)
            if gen.finish_reason == "eos" or has_final_answer(ctx.step_text(gen)):
                break
        targets: list[Generation | None] = [None] * len(drafts)
        if self.verify == "score":
            scores = self.judge.score_chain(ctx, [ctx.step_piece(g) for g in drafts])
            good = next((j for j, s in enumerate(scores) if not s >= tau), len(scores))
        else:
            targets, scores, good = self._verify(ctx, drafts, tau)
        self.rounds.append((len(drafts), good))
        for j, gen in enumerate(drafts):
            ctx.report("draft", gen.usage, thrown_away=j >= good)
        plan = [Planned(g, s, j == good, t if j == good else None)
                for j, (g, s, t) in enumerate(zip(drafts, scores, targets)) if j <= good]
        return self._serve(ctx, plan, tau)

    def _verify(self, ctx: StepContext, drafts: list[Generation],
                tau: float) -> tuple[list[Generation], list[float], int]:
        """The target's step at each drafted prefix (one batched call where the engine can), then the
        verifier, step by step up to the first mismatch: the target's steps, the scores, steps accepted."""
        prefixes = [[ctx.piece("draft", g) for g in drafts[:j]] for j in range(len(drafts))]
        targets, calls = ctx.write_steps("target", prefixes)
        report_written(ctx, "target", targets, calls)
        scores: list[float] = []
        for d, t in zip(drafts, targets):
            ended = d.finish_reason != "length"
            scores.append(self.aligned.score(ctx, ctx.step_text(d), ctx.step_text(t)) if ended else 0.0)
            if not scores[-1] >= tau:
                break
        good = next((j for j, s in enumerate(scores) if not s >= tau), len(scores))
        return targets, scores + [0.0] * (len(drafts) - len(scores)), good

    def leftover(self) -> list[Usage]:
        """Planned steps never served: dropped, or still waiting when the solve ended (a drafted step that
        was to escalate is counted as thrown away already)."""
        return self._dropped + [p.draft.usage for plan in self._ahead.values() for p in plan if not p.escalate]

    def _serve(self, ctx: StepContext, plan: list[Planned], tau: float) -> Decision:
        """The first planned step now; the rest wait for the steps before them to be committed."""
        first, rest = plan[0], plan[1:]
        if rest and not first.escalate:
            self._ahead[self._key(ctx, (ctx.step_text(first.draft),))] = rest
        step = Candidate("target", first.target) if first.escalate and first.target is not None else None
        return Decision(escalate=first.escalate, score=first.score, proposal=first.draft, step=step,
                        threshold=tau)
