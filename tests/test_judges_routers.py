"""Judges and judged routers with the real bundled models."""

import pytest

from judges import make_judge
from judges.specreason import judge_on_session, judge_suffix
from reasoning import ConfigError, Solver, solve
from reasoning.prompts import Prompt
from routers import ROUTERS, make_router
from routers.base import TIE_TOLERANCE

from .conftest import QUESTION

STEP = "She has 5 + 7 = 12 balloons in all."
# the testbed pair (two 135M models): faster than the general pair where any pair shows the same
PAIR = {"draft": "testbed-draft", "target": "testbed-target"}


@pytest.mark.slow
def test_specreason_judge_scores_in_range_deterministic_and_leaves_session_exact(gemma):
    s = gemma.open_session(Prompt.math(QUESTION))
    s.append("Lily starts with 5 red and 7 blue balloons.\n\n")
    before = s.token_ids
    a, _ = judge_on_session(s, gemma, STEP)  # also runs the appended line
    b, usage = judge_on_session(s, gemma, STEP)
    c, _ = judge_on_session(s, gemma, STEP)
    assert 0.0 <= a <= 1.0 and b == c and a == pytest.approx(b, abs=1e-5)
    assert usage.input_tokens == gemma.count_tokens(judge_suffix(gemma, STEP))  # only the new tokens
    assert s.token_ids == before
    greedy, _ = judge_on_session(s, gemma, STEP, mode="greedy")
    assert round(greedy * 9, 6) == int(round(greedy * 9))
    judged = s.generate(max_tokens=20).token_ids
    fresh = gemma.open_session(Prompt.math(QUESTION))
    fresh.append("Lily starts with 5 red and 7 blue balloons.\n\n")
    assert fresh.generate(max_tokens=20).token_ids == judged  # as if no judging happened


@pytest.mark.slow
def test_judged_steps_on_trial_leave_both_models_exact():
    """Judging every draft step and keeping it gives draft-only's solution; judging and rejecting
    every step gives target-only's: the trial append and rollback leave no trace."""
    kept = solve(QUESTION, router="specreason", threshold=0.0, max_steps=3, **PAIR)
    assert all(s.decision == "keep" and s.score is not None for s in kept.steps if s.kind != "forced_answer")
    draft_only = solve(QUESTION, router="draft-only", max_steps=3, **PAIR)
    assert [s.text for s in kept.steps] == [s.text for s in draft_only.steps]

    rejected = solve(QUESTION, router="specreason", threshold=1.0, max_steps=3, **PAIR)
    assert all(s.decision == "escalate" for s in rejected.steps if s.kind != "forced_answer")
    target_only = solve(QUESTION, router="target-only", max_steps=3, **PAIR)
    assert [s.text for s in rejected.steps] == [s.text for s in target_only.steps]
    n = len([s for s in rejected.steps if s.kind != "forced_answer"])
    assert rejected.costs.judge.calls == n and rejected.costs.discarded.calls == n
    assert kept.costs.judge.seconds > 0 and kept.costs.target.output_tokens == 0


@pytest.mark.slow
def test_specreason_router_decision_follows_the_threshold():
    # tau from the draft's own path (tau 0 keeps every step): between the lowest score before the first step
    # that scores lower still and that step's score, so the steps before it are kept and that step is not
    from eval.synthetic import generate

    problem = generate(1, steps=3, seed=0, split="val")[0]  # the draft's path scores 0.815, 0.819, 0.272, ...
    kw = dict(router="specreason", force_answer=False, step_tokens=96, max_tokens=384, **PAIR)
    path = solve(problem, threshold=0.0, max_steps=4, **kw)
    scores = [s.score for s in path.steps]
    lows = [i for i in range(1, len(scores)) if scores[i] < min(scores[:i])]
    assert lows, f"no step scores below the ones before it: {scores}"
    tau = (min(scores[:lows[0]]) + scores[lows[0]]) / 2
    sol = solve(problem, threshold=tau, max_steps=lows[0] + 1, **kw)
    assert [s.decision for s in sol.steps] == ["keep"] * lows[0] + ["escalate"]
    assert [s.score for s in sol.steps] == scores[:lows[0] + 1]
    assert {s.decision for s in sol.steps} == {"keep", "escalate"}
    for s in sol.steps:
        assert 0.0 <= s.score <= 1.0 and s.threshold == tau
        assert (s.decision == "keep") == (s.score >= tau) == (s.author == "draft")


@pytest.mark.slow
def test_audit_scores_the_target_step_and_marks_wasted_escalations():
    sol = solve(QUESTION, router="specreason", threshold=1.0, max_steps=3, router_options={"audit": "true"}, **PAIR)
    esc = [s for s in sol.steps if s.decision == "escalate"]
    assert esc
    for s in esc:
        assert 0.0 <= s.target_score <= 1.0
        assert s.wasted_escalation == (s.target_score <= s.score)


@pytest.mark.slow
def test_oracle_pays_for_both_steps_and_its_counts_add_up():
    sol = solve(QUESTION, router="oracle", threshold=0.0, max_steps=4, **PAIR)
    steps = [s for s in sol.steps if s.kind != "forced_answer"]
    esc = [s for s in steps if s.decision == "escalate"]
    assert sol.costs.draft.calls == len(steps)
    ties = sum(s.target_score == s.score for s in steps)  # the same step from both: judged once
    assert sol.costs.judge.calls == 2 * len(steps) - ties
    assert sol.costs.discarded.calls == len(esc)
    gen_calls = len(steps) + sum(1 for s in sol.steps if s.kind == "forced_answer")
    assert sol.costs.target.calls == gen_calls
    for s in steps:
        assert s.score is not None and s.target_score is not None
        assert (s.decision == "escalate") == (s.target_score - s.score > 0.0 + TIE_TOLERANCE)
        assert s.author == ("target" if s.decision == "escalate" else "draft")
        if s.decision == "escalate":
            assert s.wasted_escalation is False


@pytest.mark.slow
def test_rollout_judge_values_are_shares_of_k_and_reproducible():
    opts = {"judge": "rollout", "judge_options": {"k": "3", "tokens": "48"}}
    a = solve(QUESTION, router="rsd", threshold=0.5, max_steps=2, router_options=opts, **PAIR)
    b = solve(QUESTION, router="rsd", threshold=0.5, max_steps=2, router_options=opts, **PAIR)
    scores = [s.score for s in a.steps if s.score is not None]
    assert scores and scores == [s.score for s in b.steps if s.score is not None]
    assert all(round(x * 3, 6) in (0, 1, 2, 3) for x in scores)
    assert a.costs.judge.output_tokens > 0 and a.costs.judge.output_tokens <= 3 * 48 * len(scores)


@pytest.mark.slow
def test_rollout_judge_uses_the_gold_answer_when_given():
    from reasoning.types import Problem

    solver = Solver(router="rsd", threshold=0.5, max_steps=1, force_answer=False,
                    router_options={"judge": "rollout", "judge_options": {"k": "2", "tokens": "32"}})
    (right,) = solver.solve(Problem(question="What is 2 + 2?", gold="4")).steps
    (wrong,) = solver.solve(Problem(question="What is 2 + 2?", gold="5")).steps
    assert right.draft_text == wrong.draft_text  # the same step judged against each gold
    # the share of rollouts reaching the gold (k=2): some reach 4, none 5 (agreeing rollouts would score > 0)
    assert right.score in (0.5, 1.0) and wrong.score == 0.0
    assert (right.decision, wrong.decision) == ("keep", "escalate")


@pytest.mark.parametrize("name,kwargs,msg", [
    ("specreason", {"threshold": 1.2}, "out of range for router 'specreason'"),
    ("oracle", {"threshold": -2}, "out of range for router 'oracle'"),
    ("specreason", {"judge": "crystal-ball"}, "unknown judge 'crystal-ball'"),
    ("specreason", {"judge_options": {"mode": "vibes"}}, "mode must be 'expected' or 'greedy'"),
    ("random", {"colour": "red"}, "router 'random' has no option colour"),
    ("specreason", {"audit": "maybe"}, "audit must be true or false"),
    ("rsd", {}, "judge .prm. needs option model="),
    ("rsd", {"judge": "rollout", "judge_options": {"k": "zero"}}, "bad option value"),
])
def test_bad_router_and_judge_settings_raise_one_line(name, kwargs, msg):
    threshold = kwargs.pop("threshold", None)
    with pytest.raises(ConfigError, match=msg) as e:
        make_router(name, threshold, **kwargs)
    assert "\n" not in str(e.value)


def test_registry_lists_every_policy():
    assert {"draft-only", "target-only", "random", "specreason", "rsd", "oracle"} <= set(ROUTERS)
    assert make_judge("specreason").name == "specreason"


def test_installed_packages_add_routers_judges_and_engines_by_entry_point(tmp_path, monkeypatch):
    """A real installed distribution (a dist-info folder on sys.path) registering one of each; its
    engine is the README's minimal engine."""
    import re
    from pathlib import Path

    from reasoning.api import Solver
    from reasoning.specs import parse_spec

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (engine,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class MyEngineBackend" in b]
    (tmp_path / "demo_engine.py").write_text(engine)
    (tmp_path / "demo_judge.py").write_text("class HalfJudge:\n    name = 'half'\n\n"
                                            "    def score(self, ctx, step_text):\n        return 0.5\n")
    info = tmp_path / "specstep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: specstep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[specstep.routers]\nplugin-draft = routers.draft_only:DraftOnlyRouter\n"
        "draft-only = routers.target_only:TargetOnlyRouter\n"  # a built-in name wins
        "[specstep.judges]\nhalf = demo_judge:HalfJudge\n"
        "[specstep.engines]\nmyengine = demo_engine:MyEngineBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert type(make_router("plugin-draft")) is ROUTERS["draft-only"]
    assert type(make_router("draft-only")).__name__ == "DraftOnlyRouter"
    with pytest.raises(ConfigError, match="unknown router 'nope': choose one of arbitrage, .*, plugin-draft, "):
        make_router("nope")
    assert make_judge("half").score(None, "x") == 0.5
    with pytest.raises(ConfigError, match="unknown judge 'nope': choose one of half, prm, rollout, specreason"):
        make_judge("nope")
    assert parse_spec("myengine:any").engine == "myengine"
    sol = Solver(draft="myengine:any", router="draft-only", max_steps=2).solve("What is 6 x 7?")
    assert sol.answer == "42" and [s.author for s in sol.steps] == ["draft"]
