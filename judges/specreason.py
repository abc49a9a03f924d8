"""SpecReason's judge: a model grades the newest step for factual and logical correctness, 0-9.

The judge prompt is built on the model's own session (problem and steps so far are already in its
KV cache): the step, a user turn with the instruction, then an assistant prefix ending in "Score: "
so that the very next token is the digit. One forward pass reads the distribution over the ten
digit tokens; the session is rolled back afterwards, exactly as it was.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Literal

from judges.base import on_trial, rendered, report_judging
from reasoning.backends.base import Backend, Session, Usage
from reasoning.errors import ConfigError

if TYPE_CHECKING:
    from reasoning.context import StepContext

DIGITS = [str(d) for d in range(10)]
INSTRUCTION = "Rate the last step's factual and logical correctness (not style) from 0 (wrong) to 9 (right)."
SCORE_PREFIX = "Score: "


def judge_suffix(backend: Backend, step_text: str = "") -> str:
    """What the judge appends after the solution so far (and the step, when it is given here)."""
    markers = backend.turn_markers()
    if markers is None:
        return f"{step_text}\n\n[{INSTRUCTION}]\n{SCORE_PREFIX}"
    close_assistant, open_assistant = markers
    return f"{step_text}{close_assistant}{INSTRUCTION}{open_assistant}{SCORE_PREFIX}"


def judge_on_session(session: Session, backend: Backend, step_text: str = "",
                     mode: str = "expected") -> tuple[float, Usage]:
    """Score the step at the end of `session` (after appending `step_text`, if given) in one forward
    pass over the new tokens; the session is left exactly as it was."""
    t0 = time.perf_counter()
    mark = session.n_tokens
    session.append(judge_suffix(backend, step_text))
    try:
        logprobs, usage = session.next_token_logprobs(DIGITS)
        probs = [math.exp(logprobs[d]) for d in DIGITS]
        if mode == "greedy":
            score = greedy_score(probs, session, usage)
        else:
            score = expected_score(probs)
    finally:
        session.rollback(mark)
    return score, Usage(input_tokens=usage.input_tokens, seconds=time.perf_counter() - t0, flops=usage.flops)


def expected_score(probs: list[float]) -> float:
    """The expected digit under the distribution renormalised over the ten digits, / 9."""
    return sum(i * p for i, p in enumerate(probs)) / sum(probs) / 9


def greedy_score(probs: list[float], session: Session | None = None, usage: Usage | None = None) -> float:
    """The original SpecReason's reading: the argmax over the whole vocabulary, scored digit / 9, or 0
    when the most likely token is not a digit. When the best digit beats all the non-digit mass together
    it is the argmax; otherwise the session is asked for its top token (usage gets that call's cost)."""
    best = max(range(10), key=lambda i: probs[i])
    if probs[best] >= 1.0 - sum(probs) or session is None:
        return best / 9
    token, _, extra = session.next_token_top()
    if usage is not None:
        usage.input_tokens += extra.input_tokens
        usage.flops += extra.flops
    return int(token) / 9 if token in DIGITS else 0.0


class SpecReasonJudge:
    name = "specreason"

    def __init__(self, model: Literal["target", "draft"] = "target", mode: Literal["expected", "greedy"] = "expected"):
        if model not in ("target", "draft"):
            raise ConfigError(f"judge 'specreason': model must be 'target' or 'draft', got {model!r}")
        if mode not in ("expected", "greedy"):
            raise ConfigError(f"judge 'specreason': mode must be 'expected' or 'greedy', got {mode!r}")
        self.model, self.mode = model, mode

    def score_chain(self, ctx: StepContext, pieces: list[str]) -> list[float]:
        """Scores of consecutive steps after the accepted prefix: step j (a piece as it joins the
        solution, delimiter included) is judged after pieces[:j]. In one forward pass where the session
        can branch (transformers), else one pass per step; reported as one judge call either way."""
        backend, session = ctx.backend(self.model), ctx.session(self.model)
        suffix = judge_suffix(backend)
        if session.can_branch and self.mode == "expected":
            t0 = time.perf_counter()
            dists, usage = session.branch_logprobs(pieces, suffix, DIGITS)
            scores = [expected_score([math.exp(d[x]) for x in DIGITS]) for d in dists]
            usage.seconds = time.perf_counter() - t0
        else:
            mark, scores, usage = session.n_tokens, [], Usage()
            try:
                for piece in pieces:
                    usage.seconds += session.append(piece).seconds
                    score, u = judge_on_session(session, backend, "", self.mode)
                    scores.append(score)
                    usage.input_tokens, usage.seconds = usage.input_tokens + u.input_tokens, usage.seconds + u.seconds
                    usage.flops += u.flops
            finally:
                session.rollback(mark)
        judged = sum(backend.count_tokens(p) + backend.count_tokens(suffix) for p in pieces)
        report_judging(ctx, self.model, usage, judged)
        return scores

    def score(self, ctx: StepContext, step_text: str) -> float:
        """The step's score, read after the step as it joins the solution (`rendered`): the draft's
        proposal on trial in the session, any other step (best-of-n's samples, the target's step in
        oracle and audits) appended the same way, so the same step gets the same score either way."""
        backend = ctx.backend(self.model)
        piece = rendered(ctx, step_text)
        if on_trial(ctx, step_text):
            # The draft's step goes into the session on trial: if it is kept, the model has read it
            # already. Its share of the forward pass is charged to that model if the step is kept,
            # to the judge if it is rejected (the controller settles reports made on trial).
            session = ctx.session(self.model, with_draft_step=True)
            score, usage = judge_on_session(session, backend, "", self.mode)
            own = backend.count_tokens(judge_suffix(backend))
            step_tokens = max(0, usage.input_tokens - own)
            share = step_tokens / usage.input_tokens if usage.input_tokens else 0.0
            ctx.report(self.model, usage.part(share, step_tokens), on_trial=True)
            ctx.report("judge", usage.part(1 - share, usage.input_tokens - step_tokens))
        else:
            session = ctx.session(self.model)
            score, usage = judge_on_session(session, backend, piece, self.mode)
            ctx.report("judge", usage)
        return score
