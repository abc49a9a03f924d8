"""The step loop under every registered router, in the development loop: one short solve each (the
first two steps of a held-out testbed problem, the testbed pair, thresholds under which each router
keeps one step and escalates the other), checked for the router's decision rule, the authors that
follow from it, and the accounting. The slow tests check each policy in depth."""

import pytest

from eval.synthetic import generate
from reasoning.api import Solver
from reasoning.types import STAGES, Costs
from routers import make_router

PAIR = ("testbed-draft", "testbed-target")
PROBLEM = generate(29, steps=3, seed=0, split="test")[28]  # short steps; the draft writes 42 + 33 = 76., 76 - 33 = 43.
LIMITS = {"max_steps": 2, "step_tokens": 48, "max_tokens": 128}

# router, threshold, options, the rule a routed step's decision follows: escalate when ...
RULES = {
    "random": (0.8, {}, lambda s, t: s < t),
    "specreason": (0.77, {}, lambda s, t: s < t),  # the judge: 0.79 for the first (wrong) step, 0.76 for the second
    "arbitrage": (0.3, {"model": "testbed"}, lambda s, t: s > t),
    "first-token": (0.0006, {}, lambda s, t: s > t),
    "oracle": (0.0, {}, None),  # the target's step scores higher than the draft's (target_better)
    "handoff": (1.2, {}, lambda s, t: s > t),  # the draft step's most uncertain token
    # a gate or the judge settles
    "cascade": (0.9, {"gate": "logprob", "arbitrage": "testbed", "confident": "-0.02"}, None),
    # the judge's score of the best candidate (the testbed target is not trained to select among them)
    "best-of-n": (0.77, {"n": "2", "select": "judge"}, lambda s, t: s < t),
    "lookahead": (0.77, {"k": "2", "verify": "score"}, lambda s, t: s < t),
}


def solve(router: str, threshold=None, **options):
    return Solver(*PAIR, make_router(router, threshold, **options), **LIMITS).solve(PROBLEM)


def check_accounting(sol) -> None:
    """The solution's costs are the sum of its steps'; thrown-away draft tokens are draft tokens."""
    total = Costs()
    for s in sol.steps:
        total.add(s.costs)
    assert total == sol.costs
    assert sol.costs.flops == pytest.approx(sum(sol.costs.stage(x).flops for x in STAGES))
    assert sol.costs.discarded.output_tokens <= sol.costs.draft.output_tokens
    assert 0 < sum(sol.costs.stage(x).seconds for x in STAGES) <= sol.wall_seconds
    assert sol.steps and len([s for s in sol.steps if s.kind != "forced_answer"]) <= LIMITS["max_steps"]


@pytest.fixture(scope="module")
def anchors():
    return {name: solve(name) for name in ("draft-only", "target-only")}


def test_the_anchors_write_alone(anchors):
    d, t = anchors["draft-only"], anchors["target-only"]
    assert all(s.author == "draft" for s in d.steps)
    assert d.costs.target.calls == 0 and d.costs.judge.calls == 0 and d.costs.discarded.calls == 0
    assert all(s.author == "target" and s.draft_text is None for s in t.steps)
    assert t.costs.draft.calls == 0
    for sol in (d, t):
        check_accounting(sol)


@pytest.mark.parametrize("router", list(RULES))
def test_every_router_decides_by_its_rule_and_pays_for_every_call(anchors, router):
    tau, options, rule = RULES[router]
    sol = solve(router, tau, **options)
    check_accounting(sol)
    routed = [s for s in sol.steps if s.decision is not None]
    assert {s.decision for s in routed} == {"keep", "escalate"}  # both branches of the rule, on this problem
    for s in routed:
        assert s.threshold == tau
        if s.decision == "keep":  # best-of-n keeps the best of its candidates, not always the proposal
            assert s.author == "draft" and (s.text == s.draft_text or router == "best-of-n")
        else:
            assert s.author == "target"
        if rule is not None:
            assert (s.decision == "escalate") == rule(s.score, tau), (s.score, tau, s.decision)
    if router == "oracle":  # the target writes its step at every routed step
        assert sol.costs.target.calls >= len(routed) and sol.costs.judge.calls >= len(routed)
    if router in ("specreason", "best-of-n", "lookahead"):  # the target judges the draft's work
        assert sol.costs.judge.calls >= 1
    if router not in ("first-token", "handoff"):  # a written draft step thrown away
        assert sol.costs.discarded.output_tokens > 0


def test_the_router_file_is_the_shipped_one_for_the_testbed_pair():
    s = Solver(*PAIR, "arbitrage", 0.5, **LIMITS)
    from routers.arbitrage import SHIPPED

    assert s.router.model_dir == SHIPPED["testbed"]  # picked for the pair without model=
