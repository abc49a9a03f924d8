"""The step contract (reasoning.context): what routers and judges see, how their reports are charged,
and the README's minimal router and judge running through it on the testbed pair."""

import re
from pathlib import Path

import pytest

from reasoning.backends.base import Generation, Usage
from reasoning.context import Decision, Router, StepContext
from reasoning.slots import LoopContext
from reasoning.types import Costs, Problem

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example(marker: str) -> dict:
    """Run the README's Python block that contains `marker`; its names."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"README has {len(blocks)} blocks with {marker!r}"
    names: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), names)
    return names


class _CountingSession:
    """Writes "Step k." steps with k counting up (a fake engine: the contract needs no model)."""

    def __init__(self, backend):
        self.backend, self.ids = backend, [0]

    n_tokens = property(lambda self: len(self.ids))

    def append(self, text):
        self.ids += [0] * len(text)
        return Usage()

    def generate(self, *, max_tokens, stop=(), temperature=0.0, seed=None, ignore_eos=False):
        self.backend.written += 1
        text = f"Step {self.backend.written}.\n\n"
        self.ids += [0] * 3
        return Generation(text, [0] * 3, [-0.5] * 3, [0.1] * 3, "stop", "\n\n", Usage(0, 3, 0.0))

    def rollback(self, n):
        del self.ids[n:]

    def close(self):
        pass


class _CountingBackend:
    written = 0

    def open_session(self, prompt):
        return _CountingSession(self)


class _RecordingRouter:
    """Has exactly the Router protocol's hooks (no BaseRouter to inherit others from) and records
    which of them are read; escalates every other step."""

    name, needs_draft, needs_target, proposes, reviews = "recording", True, True, True, True

    def __init__(self):
        object.__setattr__(self, "read", set())
        object.__setattr__(self, "calls", [])

    def __getattribute__(self, attr):
        value = object.__getattribute__(self, attr)  # one it lacks raises (getattr with a default: optional)
        if attr not in ("read", "calls") and not attr.startswith("__"):
            object.__getattribute__(self, "read").add(attr)
        return value

    def for_solve(self):
        return self  # one solve here: the calls are recorded on this object

    def route(self, ctx):
        self.calls.append(("route", ctx.step_index, ctx.draft_text))
        return Decision(escalate=ctx.step_index % 2 == 1, score=0.0)

    def review(self, ctx, decision, target):
        self.calls.append(("review", ctx.step_index, target.text))

    def leftover(self):
        self.calls.append(("leftover",))
        return []


def test_the_solver_and_controller_use_exactly_the_router_protocols_hooks(monkeypatch):
    """A router with only the protocol's hooks runs (the loop asks for no hook outside it: a router
    could not answer it), and every hook the protocol declares is asked for (none is dead)."""
    import reasoning.api
    from reasoning.api import Solver

    engine = _CountingBackend()  # both models: their steps count up together
    monkeypatch.setattr(reasoning.api, "load_backend", lambda spec: engine)
    declared = set(Router.__annotations__) | {n for n, v in vars(Router).items() if callable(v) and n[0] != "_"}
    router = _RecordingRouter()
    assert declared == {n for n in vars(_RecordingRouter) if n[0] != "_"}  # the router has them all, no more
    sol = Solver(router=router, max_steps=3, force_answer=False).solve("What is 1 + 1?")
    assert router.read == declared
    # route once a step, on the draft's proposal; review once an escalated step, on the target's step
    assert [(s.decision, s.author) for s in sol.steps] == [("keep", "draft"), ("escalate", "target"),
                                                            ("keep", "draft")]
    assert router.calls == [("route", 0, "Step 1."), ("route", 1, "Step 2."), ("review", 1, "Step 3.\n\n"),
                            ("route", 2, "Step 4."), ("leftover",)]


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
