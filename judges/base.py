from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from reasoning.answers import has_final_answer
from reasoning.metrics import judging_parts

if TYPE_CHECKING:
    from reasoning.backends.base import Usage
    from reasoning.context import StepContext


@runtime_checkable
class Judge(Protocol):
    """Score a step in [0, 1] (higher is better). A judge reports each of its model calls with
    `ctx.report("judge", usage)` and must leave every session it touches as it found it."""

    name: str

    def score(self, ctx: StepContext, step_text: str) -> float: ...


def rendered(ctx: StepContext, step_text: str) -> str:
    """A step as it joins the solution, and as a judge reads it: with the step delimiter, unless it
    states the final answer (a solution ends there, at the end of sequence)."""
    final = not ctx.in_thinking and has_final_answer(step_text)
    return step_text if final else step_text + ctx.limits.delimiter


def on_trial(ctx: StepContext, step_text: str) -> bool:
    """Whether the step is the draft's proposal, still undecided and held exactly as `rendered` reads it,
    so a judge can read it on trial (if the step is kept, the model has read it already)."""
    return (ctx.draft is not None and step_text == ctx.draft_text and not ctx.reviewing
            and ctx.step_piece(ctx.draft) == rendered(ctx, step_text))


def report_judging(ctx: StepContext, model: str, usage: Usage, judged: int) -> None:
    """Report a judging call on `model`'s session whose input held `judged` tokens of judging (steps,
    instructions) and, before them, steps the session had not read yet: that catch-up is the model's own
    reading, which it needs to write its next step anyway, so it is charged to the model, the rest to
    the judge."""
    catch_up, judging = judging_parts(usage, judged)
    if catch_up is not None:
        ctx.report(model, catch_up, calls=0)
    ctx.report("judge", judging)
