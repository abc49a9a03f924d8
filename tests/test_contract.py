"""The step contract (reasoning.context): what routers and judges see, how their reports are charged,
and the README's minimal router and judge running through it on the testbed pair."""

import re
from pathlib import Path

import pytest

from judges import Judge
from reasoning.backends.base import Usage
from reasoning.context import Router, StepContext
from reasoning.registry import ROUTERS, router_class
from reasoning.slots import LoopContext
from reasoning.types import Costs, Problem

README = Path(__file__).resolve().parent.parent / "README.md"
HOOKS = ("name", "needs_draft", "needs_target", "proposes", "reviews", "route", "review")


def readme_example(marker: str) -> dict:
    """Run the README's Python block that contains `marker`; its names."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"README has {len(blocks)} blocks with {marker!r}"
    names: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), names)
    return names


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_every_router_declares_every_hook_the_controller_calls(name):
    cls = router_class(name)
    assert [h for h in HOOKS if not hasattr(cls, h)] == []


def test_the_router_protocol_requires_reviews():
    class NoReviews:
        name, needs_draft, needs_target, proposes = "x", True, False, True

        def route(self, ctx): ...

        def review(self, ctx, decision, target): ...

    assert not isinstance(NoReviews(), Router)
    NoReviews.reviews = False
    assert isinstance(NoReviews(), Router)


def test_reports_on_trial_go_to_the_model_if_kept_and_to_the_judge_if_not():
    ctx = LoopContext(Problem(question="q"), [])
    assert isinstance(ctx, StepContext)
    ctx.report("target", Usage(10, 0, 1.0, 100.0), on_trial=True)  # the step's share of a judge pass
    ctx.report("judge", Usage(5, 1, 0.5, 50.0))
    kept, rejected = Costs(), Costs()
    assert ctx.charge(kept, keep=True) == 1.5
    ctx.charge(rejected, keep=False)
    assert (kept.target.calls, kept.target.input_tokens, kept.target.flops) == (0, 10, 100.0)
    assert (kept.judge.calls, kept.judge.input_tokens) == (1, 5)
    assert rejected.target.input_tokens == 0
    assert (rejected.judge.calls, rejected.judge.input_tokens, rejected.judge.flops) == (1, 15, 150.0)
    part = Costs()
    assert ctx.charge(part, start=1) == 0.5 and part.judge.input_tokens == 5 and part.target.input_tokens == 0
    with pytest.raises(RuntimeError, match="no model sessions"):
        ctx.session("draft")


@pytest.mark.slow
def test_the_readme_router_and_judge_run_through_the_contract():
    from eval.synthetic import generate
    from reasoning.api import Solver
    from routers.specreason import SpecReasonRouter

    short = readme_example("class ShortStepRouter")["ShortStepRouter"]
    equals = readme_example("class EqualsSignJudge")["EqualsSignJudge"]
    assert isinstance(short(), Router) and isinstance(equals(), Judge)
    problem = generate(1, steps=3, seed=0, split="test")[0]
    kw = dict(draft="testbed-draft", target="testbed-target", step_tokens=96, max_tokens=384)

    sol = Solver(router=short(threshold=16.0), **kw).solve(problem)
    routed = [s for s in sol.steps if s.decision is not None]
    assert routed
    for s in routed:
        assert s.score == len(s.draft_text)
        assert (s.decision == "escalate") == (len(s.draft_text) < 16) == (s.author == "target")

    sol = Solver(router=SpecReasonRouter(0.75, judge=equals()), **kw).solve(problem)
    routed = [s for s in sol.steps if s.decision is not None]
    assert routed
    for s in routed:
        assert s.score == (1.0 if "=" in s.draft_text else 0.5)
        assert (s.decision == "escalate") == (s.score < 0.75)
    assert sol.costs.judge.calls == 0  # a judge that calls no model reports nothing
