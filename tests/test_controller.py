"""The step loop with the real bundled models."""

import pytest

from reasoning import ConfigError, Solver, solve
from reasoning.answers import last_boxed
from reasoning.backends.base import Generation, Usage
from reasoning.controller import Controller, Limits
from reasoning.types import STAGES, Costs, Problem
from routers import make_router

from .conftest import QUESTION


def _sum_steps(sol) -> Costs:
    total = Costs()
    for s in sol.steps:
        total.add(s.costs)
    return total


@pytest.mark.slow
def test_draft_only_never_loads_or_runs_the_target():
    solver = Solver(router="draft-only", max_steps=4)
    assert solver.target is None
    sol = solver.solve(QUESTION)
    assert sol.steps and all(s.author == "draft" for s in sol.steps)
    assert sol.costs.target.calls == 0 and sol.costs.discarded.calls == 0
    last = sol.steps[-1]  # the draft's own answer step ends the solution (no answer forced)
    assert (sol.stop_reason, last.kind, sol.forced_answer, sol.answer_rule) == ("answer", "answer", False, "boxed")
    assert sol.answer is not None and sol.answer == last_boxed(last.text)
    assert sol.acceptance()["steps"] == 1.0


@pytest.mark.slow
def test_target_only_runs_no_draft():
    sol = solve(QUESTION, router="target-only", max_steps=4)
    assert all(s.author == "target" and s.decision is None and s.draft_text is None for s in sol.steps)
    assert sol.costs.draft.calls == 0
    assert sol.costs.target.output_tokens >= sum(s.tokens for s in sol.steps)


@pytest.mark.slow
def test_mixed_authors_keep_every_session_on_the_solution_text():
    solver = Solver(router="random", threshold=0.5, max_steps=6)
    ctl = Controller(solver.draft, solver.target, solver.router, solver.limits, solver.config(solver.limits))
    checked = []

    def check(step):
        for slot in (ctl.sessions.draft, ctl.sessions.target):
            if slot.session is not None:  # each session holds exactly the prefix it claims, and after it
                held = "".join(p.text for p in ctl.sessions.pieces[: slot.held])  # a rejected step it wrote
                assert slot.session.text == held if slot.trial is None else slot.session.text.startswith(held)
                assert slot.trial is None or (slot.written and slot.session.text != held)
        checked.append(step.author)

    sol = ctl.run(Problem(question=QUESTION, id="mix"), on_step=check)
    assert len(checked) == len(sol.steps)
    escalated = [s for s in sol.steps if s.decision == "escalate"]
    kept = [s for s in sol.steps if s.decision == "keep"]
    assert escalated and kept, "seeded random router at 0.5 should mix authors on this problem"
    assert all(s.author == "target" and s.draft_text for s in escalated)
    assert all(s.text == s.draft_text for s in kept)
    # accounting: solution totals are the sum of the steps; thrown-away drafts are counted
    assert _sum_steps(sol) == sol.costs
    assert sol.costs.discarded.calls == len(escalated)
    assert sol.costs.draft.calls == len(escalated) + len(kept)
    assert sol.costs.discarded.output_tokens <= sol.costs.draft.output_tokens
    spent = sum(sol.costs.stage(s).seconds for s in STAGES)
    assert 0 < spent <= sol.wall_seconds


@pytest.mark.slow
def test_same_settings_give_the_same_solution():
    a = solve(QUESTION, router="random", threshold=0.3, max_steps=3)
    b = solve(QUESTION, router="random", threshold=0.3, max_steps=3)
    assert [(s.text, s.author, s.score) for s in a.steps] == [(s.text, s.author, s.score) for s in b.steps]


@pytest.mark.slow
@pytest.mark.parametrize("router,author", [("target-only", "target"), ("draft-only", "draft")])
def test_budget_without_answer_forces_one_short_answer_step(router, author):
    sol = solve(QUESTION, router=router, max_tokens=6)
    assert sol.stop_reason == "token_budget"
    assert sum(s.tokens for s in sol.steps[:-1]) == 6
    last = sol.steps[-1]
    assert last.kind == "forced_answer" and last.author == author
    assert sol.forced_answer and sol.answer == last_boxed(last.text)
    assert sol.answer_rule == "forced"


# think mode: tests/test_fidelity.py (test_think_mode_without_a_closing_tag_forces_an_answer_outside_thinking)


class _EchoSession:
    """Writes the same step forever: a repetition real models do not produce on demand."""

    def __init__(self):
        self.ids = [0]

    n_tokens = property(lambda self: len(self.ids))
    text = property(lambda self: "")

    def append(self, text):
        self.ids += [0] * len(text)
        return Usage()

    def generate(self, *, max_tokens, stop=(), temperature=0.0, seed=None, ignore_eos=False):
        self.ids += [0] * 4
        return Generation("Same step.\n\n", [0] * 4, [-0.5] * 4, [0.1] * 4, "stop", "\n\n", Usage(0, 4, 0.0))

    def rollback(self, n):
        del self.ids[n:]

    def close(self):
        pass


class _EchoBackend:
    def open_session(self, prompt):
        return _EchoSession()


def test_a_step_repeated_verbatim_stops_the_solution():
    limits = Limits(force_answer=False)
    router = make_router("draft-only")
    ctl = Controller(_EchoBackend(), None, router, limits, _cfg(limits))
    sol = ctl.run(Problem(question="q"))
    assert sol.stop_reason == "repeated_step" and len(sol.steps) == 2 and sol.answer is None


class _ScriptedSession(_EchoSession):
    """Writes the given texts in turn, one a call."""

    def __init__(self, texts):
        super().__init__()
        self.texts = list(texts)

    def generate(self, *, max_tokens, stop=(), temperature=0.0, seed=None, ignore_eos=False):
        text = self.texts.pop(0)
        ids = [0] * len(text.split())
        self.ids += ids
        return Generation(text, ids, [-0.5] * len(ids), [0.1] * len(ids), "stop", None, Usage(0, len(ids), 0.0))


class _ScriptedBackend:
    def __init__(self, texts):
        self.texts = texts

    def open_session(self, prompt):
        return _ScriptedSession(self.texts)


@pytest.mark.parametrize("written", ["", "}.", " . $"])
def test_a_forced_answer_that_reads_nothing_is_none_and_the_stop_reason_says_so(written):
    limits = Limits(max_steps=1)
    ctl = Controller(_ScriptedBackend(["First we add the numbers.\n\n", written]), None, make_router("draft-only"),
                     limits, _cfg(limits))
    sol = ctl.run(Problem(question="q"))
    assert sol.steps[-1].kind == "forced_answer" and sol.forced_answer
    assert sol.answer is None and sol.answer_rule is None and sol.stop_reason == "no_answer"


def test_a_forced_answer_that_reads_one_keeps_the_budget_stop_reason():
    limits = Limits(max_steps=1)
    ctl = Controller(_ScriptedBackend(["First we add the numbers.\n\n", "12}."]), None, make_router("draft-only"),
                     limits, _cfg(limits))
    sol = ctl.run(Problem(question="q"))
    assert (sol.answer, sol.answer_rule, sol.stop_reason) == ("12", "forced", "max_steps")
    assert sol.steps[-1].text == "The answer is \\boxed{12}."


def _cfg(limits):
    from reasoning.types import SolveConfig

    return SolveConfig(draft="echo", target="none", router="draft-only", max_steps=limits.max_steps,
                       max_tokens=limits.max_tokens, step_tokens=limits.step_tokens,
                       delimiter=limits.delimiter, few_shot=limits.few_shot, temperature=0.0)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(max_steps=-1), "bad value for max_steps"),
    (dict(temperature=-1), "bad value for temperature"),
    (dict(few_shot=9), "bad value for few_shot"),
    (dict(router="random", threshold=1.5), "threshold 1.5 is out of range for router 'random'"),
    (dict(router="oracle-of-delphi"), "unknown router 'oracle-of-delphi'"),
])
def test_bad_settings_raise_config_errors(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        Solver(**{"router": "draft-only", **kwargs})


def test_empty_question_is_rejected():
    with pytest.raises(ConfigError, match="question is empty"):
        Solver(router="draft-only").solve("   ")
