"""The step policies beyond the anchors (first-token, best-of-n, cascade), on the testbed pair: their
mechanics and their accounting, checked against the anchors they reduce to."""

import math

import pytest

from eval.synthetic import generate
from reasoning.api import Solver
from reasoning.controller import Controller
from reasoning.errors import ConfigError
from reasoning.types import Problem
from routers import make_router

from .conftest import QUESTION

KW = dict(draft="testbed-draft", target="testbed-target", step_tokens=96, max_tokens=384)
PROBLEM = generate(29, steps=3, seed=0, split="test")[28]  # the draft: 42 + 33 = 76., 76 - 33 = 43. (wrong: 75, 42)


def texts(sol):
    """The steps' texts, without a forced answer (the target writes it whenever the router loads it)."""
    return [s.text for s in sol.steps if s.kind != "forced_answer"]


def solve(router, **opts):
    return Solver(router=router, **KW, **opts).solve(PROBLEM)


def controller(router) -> Controller:
    """One solve's controller; `ctl.router` is the router that solve uses (its per-solve state)."""
    solver = Solver(router=router, **KW)
    return Controller(solver.draft, solver.target, solver.router, solver.limits, solver.config(solver.limits))


@pytest.fixture(scope="module")
def anchors():
    return {name: solve(name) for name in ("draft-only", "target-only")} | {
        "specreason": solve(make_router("specreason", 0.5))}


@pytest.mark.slow
def test_first_token_decides_before_the_step_and_reduces_to_the_anchors(anchors):
    keep_all = solve(make_router("first-token", 20.0))
    assert texts(keep_all) == texts(anchors["draft-only"])  # the draft writes from the same prefix
    escalate_all = solve(make_router("first-token", 0.0))  # no first token is certain: the target writes all
    routed = [s for s in escalate_all.steps if s.kind != "forced_answer"]
    assert routed and all(s.score > 0 and s.decision == "escalate" and s.author == "target" for s in routed)
    assert texts(escalate_all) == texts(anchors["target-only"])
    scores = sorted(s.score for s in keep_all.steps if s.kind != "forced_answer")
    tau = scores[len(scores) // 2]  # the median entropy on the draft's path
    sol = solve(make_router("first-token", tau))
    assert {s.decision for s in sol.steps if s.kind != "forced_answer"} == {"keep", "escalate"}
    for s in sol.steps:
        if s.kind == "forced_answer":
            continue
        assert s.decision == ("escalate" if s.score > tau else "keep") and s.score >= 0
        assert s.author == ("target" if s.decision == "escalate" else "draft")
        # one probe token per step: the kept step's first token (continued, not written again), else thrown
        # away (not its prefill); a kept step's continuation is the draft's only other call
        thrown = (s.costs.discarded.calls, s.costs.discarded.input_tokens, s.costs.discarded.output_tokens)
        assert thrown == ((0, 0, 0) if s.author == "draft" else (0, 0, 1))
        assert s.costs.draft.calls == (2 if s.author == "draft" else 1)
        assert s.costs.draft.output_tokens == (s.tokens + (s.end == "eos") if s.author == "draft" else 1)
        assert s.costs.target.calls == (1 if s.author == "target" else 0)
        if s.author == "draft":
            assert s.draft_text == s.text and s.draft_tokens == s.tokens


@pytest.mark.slow
def test_best_of_n_keeps_the_best_of_its_candidates_and_counts_the_rest_as_thrown_away(anchors):
    one = solve(make_router("best-of-n", 0.5, n=1, select="judge"))
    spec = anchors["specreason"]
    assert texts(one) == texts(spec) and [s.score for s in one.steps] == [s.score for s in spec.steps]

    ctl = controller(make_router("best-of-n", 0.5, n=3, temperature=1.0, select="judge"))
    seen = []

    def check(step):
        if step.kind == "forced_answer":
            return
        cands = ctl.router.candidates
        assert len(cands) == 3
        best = max(score for _, score in cands)
        assert step.score == best
        first_best = next(text for text, score in cands if score == best)
        if step.decision == "keep":
            assert step.author == "draft" and step.text == first_best.strip()
            assert step.costs.discarded.calls == 2  # the two candidates not kept
        else:
            assert step.author == "target" and best < 0.5
            assert step.costs.discarded.calls == 3
        assert step.costs.draft.calls == 3
        seen.append(cands)

    ctl.run(PROBLEM, on_step=check)
    assert seen and any(len({t for t, _ in c}) > 1 for c in seen)  # sampling gave other candidates


@pytest.mark.slow
def test_best_of_n_lets_the_target_select_a_candidate_or_none_in_one_call(anchors):
    everything = solve(make_router("best-of-n", 1.0, n=2, temperature=1.0))  # no choice is that sure
    routed = [s for s in everything.steps if s.kind != "forced_answer"]
    assert routed and all(s.author == "target" for s in routed)
    assert texts(everything) == texts(anchors["target-only"])

    # the testbed target was trained to grade steps, never to choose among them: it answers "none" to
    # almost every list (it escalates every step of PROBLEM). SmolLM2-Instruct as the target picks.
    solver = Solver("smollm2-135m", "smollm2-135m", make_router("best-of-n", 0.0, n=3, temperature=1.0),
                    max_steps=3, step_tokens=32, few_shot=0)
    ctl = Controller(solver.draft, solver.target, solver.router, solver.limits, solver.config(solver.limits))
    seen = []

    def check(step):
        if step.kind == "forced_answer":
            return
        cands = ctl.router.candidates  # distinct candidates with the target's probability of choosing each
        assert 1 <= len(cands) <= 3 and len({" ".join(t.split()) for t, _ in cands}) == len(cands)
        assert sum(p for _, p in cands) <= 1.0 + 1e-6  # the rest is "none of them"
        best_text, best = max(cands, key=lambda c: c[1])
        assert step.score == pytest.approx(best)
        assert step.costs.judge.calls == 1  # one call lists them all
        assert step.costs.draft.calls == 3
        if step.decision == "keep":
            assert step.author == "draft" and step.text == best_text.strip()
            assert step.costs.discarded.calls == 2  # the two samples: kept is a sample or the proposal
        else:
            assert step.author == "target" and best <= 1 - sum(p for _, p in cands)  # "none" was likelier
        seen.append(step.decision)

    ctl.run(Problem(question=QUESTION), on_step=check)
    assert set(seen) == {"keep", "escalate"}


@pytest.mark.slow
def test_cascade_calls_the_judge_only_when_no_gate_settles(anchors):
    never = solve(make_router("cascade", 0.5, gate="logprob", confident=1.0))  # never that sure: always the judge
    spec = anchors["specreason"]
    assert texts(never) == texts(spec) and [s.decision for s in never.steps] == [s.decision for s in spec.steps]
    always = solve(make_router("cascade", 0.5, gate="logprob", confident=-1e9))  # always sure: never the judge
    assert texts(always) == texts(anchors["draft-only"]) and always.costs.judge.calls == 0
    # ConfSpec's gate (the default): the draft grades its own step; a confident verdict settles it
    routed = lambda sol: [s for s in sol.steps if s.kind != "forced_answer"]  # noqa: E731
    sure = solve(make_router("cascade", 0.5, accept=0.001, reject=0.0))  # any draft score keeps the step
    assert texts(sure) == texts(anchors["draft-only"])
    assert sure.costs.judge.calls == len(routed(sure)) and all(s.score is None for s in routed(sure))
    unsure = solve(make_router("cascade", 0.5, accept=1.0, reject=0.0))  # no verdict that sure: the target judges
    assert texts(unsure) == texts(spec) and [s.decision for s in unsure.steps] == [s.decision for s in spec.steps]
    assert unsure.costs.judge.calls == 2 * len(routed(unsure))  # the draft's verdict, then the target's
    assert unsure.costs.judge.flops > spec.costs.judge.flops

    ctl = controller(make_router("cascade", 0.5, gate="logprob", confident=-0.02, arbitrage="testbed", low=0.15,
                                 high=0.7))
    sol = ctl.run(PROBLEM)
    for s in sol.steps:
        if s.kind == "forced_answer":
            continue
        assert (s.score is None) == (s.costs.judge.calls == 0)
    assert {s.score is None for s in sol.steps if s.kind != "forced_answer"} == {True, False}  # gated and judged
    assert sum(ctl.router.gates.values()) == len([s for s in sol.steps if s.kind != "forced_answer"])


@pytest.mark.slow
def test_handoff_keeps_the_drafts_prefix_exactly_and_throws_away_only_the_rest(anchors):
    assert texts(solve(make_router("handoff", 20.0, way="one"))) == texts(anchors["draft-only"])
    ctl = controller(make_router("handoff", 0.1, way="one"))
    seen = []

    def check(step):
        if step.kind == "forced_answer":
            return
        if step.decision == "keep":
            assert step.author == "draft" and step.score <= 0.1 and step.text == step.draft_text
            assert step.costs.target.calls == 0 and step.costs.discarded.output_tokens == 0
            return
        n, prefix = ctl.router.kept[-1]
        assert step.author == "target" and step.score > 0.1 and step.handoff_tokens == n < step.draft_tokens
        assert step.draft_text.startswith(prefix.strip()) and step.text.startswith(prefix.strip())
        assert step.costs.discarded.output_tokens == step.draft_tokens - n  # only the tokens after the point
        assert step.costs.target.calls == 1 and step.costs.draft.calls == 1
        assert step.tokens == n + step.costs.target.output_tokens - (step.end == "eos")
        seen.append(n)

    sol = ctl.run(PROBLEM, on_step=check)
    assert any(n > 0 for n in seen)  # some step kept a non-empty prefix
    # a handoff step is a partial escalation, weighted by the share of its tokens the target wrote
    routed = [s for s in sol.steps if s.kind != "forced_answer"]
    shares = [(s.tokens - s.handoff_tokens) / s.tokens if s.author == "target" else 0.0 for s in routed]
    assert any(0 < x < 1 for x in shares) and sol.escalation_rate() == pytest.approx(sum(shares) / len(routed))
    from eval.summary import summarize
    from eval.sweep import SweepConfig, _record

    rec = _record(SweepConfig(dataset="synthetic", policies=["handoff"]), "k", PROBLEM, "handoff", 0.1, None, sol)
    tokens = sum(s.tokens for s in routed)
    assert rec.target_token_share == pytest.approx(sum(s.tokens * x for s, x in zip(routed, shares)) / tokens)
    point = summarize([rec])[0]  # waste is the tokens written and thrown away, the re-read input apart
    assert point.wasted_draft_tokens == sol.costs.discarded.output_tokens
    assert point.wasted_draft_input == sol.costs.discarded.input_tokens


def test_two_way_handoff_passes_control_both_ways_and_each_model_reads_only_what_the_other_wrote(anchors):
    """R-Stitch: at tau=20 the draft never hands off (draft-only's solution); at tau=back=0 the draft's first
    token always goes and the target never hands back (target-only's); between, steps are stitched from both
    models, one dropped draft token per handoff, and neither model reads its own tokens again."""
    assert texts(solve(make_router("handoff", 20.0))) == texts(anchors["draft-only"])
    assert texts(solve(make_router("handoff", 0.0, back=0.0))) == texts(anchors["target-only"])
    ctl = controller(make_router("handoff", 0.05))
    prompts = {}

    def held(step):
        for m in ("draft", "target"):
            if ctl.sessions.slot(m).session is not None:
                prompts[m] = ctl.sessions.slot(m).session.n_prompt

    sol = ctl.run(PROBLEM, on_step=held)
    routed = [s for s in sol.steps if s.kind != "forced_answer"]
    assert {s.decision for s in routed} == {"keep", "escalate"} and max(ctl.router.handoffs) >= 2  # back and forth
    for s, n in zip(routed, ctl.router.handoffs):
        assert (s.decision == "escalate") == (s.score > 0.05) == (s.author == "target") == (n > 0)
        assert s.costs.discarded.output_tokens == n and s.costs.discarded.calls == 0  # one dropped token a handoff
        assert s.costs.target.calls == n and s.costs.draft.calls in (n, n + 1)  # control can come back after each
        if s.author == "target":  # the draft's tokens in it are counted as the draft's, the rest as the target's
            assert 0 <= s.handoff_tokens < s.tokens
            assert s.costs.target.output_tokens == s.tokens - s.handoff_tokens + (s.end == "eos")
    assert any(0 < s.handoff_tokens for s in routed if s.author == "target")
    # each model read its prompt, at most the other's tokens, and at most one token of its own a call (its last
    # sample, run by the next call): never a segment of its own again
    written = {m: sum(s.tokens - s.handoff_tokens if s.author == "target" else 0 for s in routed) for m in ("target",)}
    written["draft"] = sum(s.handoff_tokens if s.author == "target" else s.tokens for s in routed)
    for model, other in (("draft", "target"), ("target", "draft")):
        prompt, c = prompts[model], sol.costs.stage(model)
        assert prompt < c.input_tokens <= prompt + written[other] + c.calls, model


@pytest.mark.slow
def test_normalized_handoff_is_handoff_at_the_threshold_over_log_vocabulary():
    """normalized=true divides every entropy by log(vocabulary size) (R-Stitch's later versions): at tau / log V
    it writes the same steps, passing control at the same tokens, as tau in nats; its scores are the nats'
    over log V. So it is the same policy on another scale, not a variant to measure apart."""
    tau = 0.05
    ctl = controller(make_router("handoff", tau))
    log_v = math.log(ctl.draft_backend.n_vocab)
    assert ctl.draft_backend.n_vocab == ctl.target_backend.n_vocab  # one vocabulary (two-way handoff needs it)
    nats = ctl.run(PROBLEM)
    norm_ctl = controller(make_router("handoff", tau / log_v, normalized=True))
    norm = norm_ctl.run(PROBLEM)
    assert texts(norm) == texts(nats)
    assert [(s.author, s.decision, s.tokens, s.handoff_tokens) for s in norm.steps] == \
        [(s.author, s.decision, s.tokens, s.handoff_tokens) for s in nats.steps]
    assert norm_ctl.router.handoffs == ctl.router.handoffs and max(ctl.router.handoffs) >= 1
    routed = [(a.score, b.score) for a, b in zip(norm.steps, nats.steps) if b.kind != "forced_answer"]
    assert [a for a, _ in routed] == pytest.approx([b / log_v for _, b in routed], rel=1e-6)


@pytest.mark.slow
def test_lookahead_keeps_exactly_the_judged_prefix_of_its_drafted_steps(anchors):
    ahead1 = controller(make_router("lookahead", 0.5, k=1, verify="score"))
    one = ahead1.run(PROBLEM)  # one step ahead: SpecReason's decisions
    assert ahead1.router.rounds and all(n == 1 and m in (0, 1) for n, m in ahead1.router.rounds)  # one step a call
    spec = anchors["specreason"]
    assert texts(one) == texts(spec)
    assert [s.score for s in one.steps] == pytest.approx([s.score for s in spec.steps], abs=1e-3)

    for tau in (0.5, 0.77):
        ctl = controller(make_router("lookahead", tau, k=3, verify="score"))
        router = ctl.router

        def held(step, ctl=ctl):  # the held steps, then at most the steps drafted ahead (rolled back when read)
            for slot in (ctl.sessions.draft, ctl.sessions.target):
                if slot.session is not None:
                    text = "".join(p.text for p in ctl.sessions.pieces[: slot.held])
                    assert slot.session.text == text if slot.trial is None else slot.session.text.startswith(text)

        sol = ctl.run(PROBLEM, on_step=held)
        steps = [s for s in sol.steps if s.kind != "forced_answer"]
        # each judge call scored 1..k drafted steps and kept the first m of them
        assert router.rounds and all(1 <= n <= 3 and 0 <= m <= n for n, m in router.rounds)
        assert sol.costs.judge.calls == len(router.rounds)
        kept = [s for s in steps if s.author == "draft"]
        escalated = [s for s in steps if s.author == "target"]
        assert all(s.score >= tau and s.text == s.draft_text for s in kept)
        assert all(s.score < tau and s.decision == "escalate" and s.draft_text for s in escalated)
        assert len(kept) == sum(m for _, m in router.rounds)  # every step judged good is kept, in order
        assert len(escalated) == sum(m < n for n, m in router.rounds)  # the first bad one is rewritten
        # drafted steps after the first bad one are thrown away, and only those and the bad one
        assert sol.costs.discarded.calls == sum(n - m for n, m in router.rounds)
        if tau == 0.5:
            assert any(m > 1 for _, m in router.rounds)  # some call kept several steps
        else:
            assert escalated and kept


def test_lookahead_as_published_with_exact_verification_writes_target_onlys_solution(anchors):
    """The paper's lookahead (verify=aligned) with the exact comparison only: a drafted step is kept when it is
    the target's own step at that prefix, else the target's step follows; so the solution is target-only's,
    step for step (greedy), and the target's steps at every drafted prefix took one batched call a round."""
    ctl = controller(make_router("lookahead", None, k=3, verifier="none"))
    sol = ctl.run(PROBLEM)
    rounds = ctl.router.rounds
    assert texts(sol) == texts(anchors["target-only"])
    steps = [s for s in sol.steps if s.kind != "forced_answer"]
    kept = [s for s in steps if s.author == "draft"]
    escalated = [s for s in steps if s.author == "target"]
    assert kept and escalated  # the draft's wrong step (75 - 33 = 41.) is replaced by the target's
    assert all(s.score == 1.0 and s.decision == "keep" and s.text == s.draft_text for s in kept)
    assert all(s.score == 0.0 and s.decision == "escalate" and s.text != s.draft_text for s in escalated)
    assert len(kept) == sum(m for _, m in rounds) and len(escalated) == sum(m < n for n, m in rounds)
    assert sol.costs.target.calls == len(rounds) and sol.costs.judge.calls == 0  # one batched call a round
    assert sol.costs.target.output_tokens >= sum(s.tokens for s in escalated)  # its steps at accepted places too
    assert sol.costs.discarded.calls == sum(n - m for n, m in rounds)  # drafted steps from the first mismatch on


def test_lookaheads_verifier_is_called_only_where_the_steps_differ_and_its_verdict_decides(anchors):
    """verifier=target: equal steps are accepted without a call (score 1); for differing ones the target answers
    aligned/unaligned, one judge call each, and the step is kept exactly when that probability is >= tau."""
    from judges.aligned import AlignedJudge, exactly_same

    assert exactly_same("3 + 16 = 19.", "3+16 =19.\n") and not exactly_same("3 + 16 = 19.", "3 + 16 = 29.")
    calls = []
    score = AlignedJudge.score

    def spied(self, ctx, a, b):
        s = score(self, ctx, a, b)
        calls.append((a, b, s))
        return s

    for tau in (0.5, 1.0):
        calls.clear()
        AlignedJudge.score = spied
        try:
            ctl = controller(make_router("lookahead", tau, k=3))
            sol = ctl.run(PROBLEM)
        finally:
            AlignedJudge.score = score
        differ = [(a, b, s) for a, b, s in calls if not exactly_same(a, b)]
        assert all(s == 1.0 for a, b, s in calls if exactly_same(a, b))
        assert differ and sol.costs.judge.calls == len(differ) and sol.costs.judge.input_tokens > 0
        assert all(0.0 < s < 1.0 for *_, s in differ)
        for step in sol.steps:
            if step.decision is not None:
                assert (step.decision == "keep") == (step.score >= tau)
        if tau == 1.0:  # only equal steps pass: target-only's solution again
            assert texts(sol) == texts(anchors["target-only"])


@pytest.mark.slow
def test_lookaheads_judge_is_charged_the_steps_it_judges_and_not_the_targets_catch_up():
    from judges.specreason import judge_suffix
    from reasoning.backends import load_backend

    ctl = controller(make_router("lookahead", 0.5, k=3, verify="score"))
    judge, calls = ctl.router.judge, []
    chain = judge.score_chain

    def recorded(ctx, pieces):
        held = ctx.session("target").n_tokens  # the target's session, caught up, before the judge reads
        calls.append((list(pieces), held))
        return chain(ctx, pieces)

    judge.score_chain = recorded
    sol = ctl.run(PROBLEM)
    t = load_backend(KW["target"])
    suffix = t.count_tokens(judge_suffix(t))
    assert len(calls) == len(ctl.router.rounds) == sol.costs.judge.calls >= 2
    # the judge reads each drafted step and its own question after it, nothing else
    assert sol.costs.judge.input_tokens == sum(t.count_tokens(p) + suffix for pieces, _ in calls for p in pieces)
    # rounds after the first began with accepted steps the target had not read: its own reading
    assert calls[-1][1] > calls[0][1] and sol.costs.target.input_tokens >= calls[-1][1]


@pytest.mark.slow
def test_a_solve_never_takes_another_solves_plans():
    """A second solve of the same problem run in the middle of a first one (after the first planned its
    next step) leaves the first exactly as it is alone: lookahead's plans belong to their solve."""
    router = make_router("lookahead", 0.5, k=2, verify="score")

    def record(sol):
        return texts(sol), [(s.author, s.decision, s.score) for s in sol.steps], sol.costs.model_dump(
            exclude={"draft": {"seconds"}, "judge": {"seconds"}, "router": {"seconds"}, "target": {"seconds"},
                     "discarded": {"seconds"}})

    alone = solve(router)
    inner = []

    def interleave(step):
        if step.index == 0 and not inner:  # the first step is kept and the second planned: solve again now
            inner.append(solve(router))

    outer = Solver(router=router, **KW).solve(PROBLEM, on_step=interleave)
    assert inner and alone.costs.judge.calls < len([s for s in alone.steps if s.decision])  # some from a plan
    assert record(outer) == record(alone) == record(inner[0])


@pytest.mark.parametrize("name,opts,msg", [
    ("lookahead", {"k": 0}, "k must be >= 1"),
    ("lookahead", {"judge": "rollout", "verify": "score"}, "cannot score steps ahead"),
    ("lookahead", {"verify": "vibes"}, "option verify must be one of 'aligned', 'score', got 'vibes'"),
    ("lookahead", {"verifier": "oracle"}, "option verifier must be one of 'target', 'draft', 'none', got 'oracle'"),
    ("handoff", {"signal": "vibes"}, "option signal must be one of 'entropy', 'surprise', got 'vibes'"),
    ("handoff", {"normalized": "true"}, "normalized=true needs a threshold (and back) below 1"),
    ("handoff", {"normalized": "true", "threshold": 1.0}, "normalized=true needs a threshold (and back) below 1"),
    ("handoff", {"normalized": "true", "threshold": 0.2, "back": 1.0}, "normalized=true needs a threshold"),
    ("best-of-n", {"n": 0}, "n must be >= 1"),
    ("best-of-n", {"select": "oracle"}, "option select must be one of 'target', 'judge', got 'oracle'"),
    ("best-of-n", {"n": 10}, "select=target lists at most 9 candidates, got n=10"),
    ("best-of-n", {"temperature": "x"}, "router 'best-of-n' option temperature must be a number, got 'x'"),
    ("cascade", {"confident": -2, "doubtful": -1}, "doubtful (-1.0) must be below confident"),
    ("cascade", {"low": 0.9, "high": 0.1}, "need 0 <= low < high <= 1"),
    ("cascade", {"accept": 0.1, "reject": 0.5}, "need 0 <= reject < accept <= 1, got reject 0.5, accept 0.1"),
    ("cascade", {"gate": "entropy"}, "gate must be one of"),
    ("first-token", {"threshold": 30}, "out of range for router 'first-token'"),
])
def test_bad_options_are_one_line(name, opts, msg):
    threshold = opts.pop("threshold", None)
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        make_router(name, threshold, **opts)


def test_eval_plans_the_new_policies_at_thresholds():
    from eval.sweep import SweepConfig, plan

    names = ("first-token", "cascade", "best-of-n", "handoff", "lookahead")
    cfg = SweepConfig(dataset="synthetic", policies=list(names), thresholds=[0.01, 0.9],
                      router_options={"n": "2", "confident": "-0.1", "k": "2", "signal": "surprise", "way": "one"})
    assert plan(cfg) == [(p, t, None) for p in names for t in (0.01, 0.9)]


def test_a_step_gets_the_same_judge_score_on_trial_and_off_it():
    """The proposal is judged on trial (in the session, with its delimiter); any other step (a sample,
    the target's step) is appended the same way: the same step scores the same on both paths."""
    from judges.base import on_trial
    from judges.specreason import SpecReasonJudge
    from reasoning.context import Decision

    judge, pairs = SpecReasonJudge(), []

    class BothPaths:
        name, needs_draft, needs_target, proposes, reviews = "both-paths", True, True, True, False

        def for_solve(self):
            return self

        def route(self, ctx):
            assert on_trial(ctx, ctx.draft_text)
            held = judge.score(ctx, ctx.draft_text)  # on trial
            ctx.reviewing = True  # the same text, read as a candidate that is not on trial
            again = judge.score(ctx, ctx.draft_text)
            ctx.reviewing = False
            pairs.append((ctx.draft_text, held, again))
            return Decision(escalate=False, score=held)

    sol = controller(BothPaths()).run(PROBLEM)
    assert len(pairs) == len(sol.steps) >= 4 and "\\boxed" in pairs[-1][0]  # the answer step too
    for text, held, again in pairs:
        assert again == pytest.approx(held, abs=1e-4), text
    assert len({round(h, 3) for _, h, _ in pairs}) > 1  # the scores say something


def test_steps_a_router_writes_stay_in_the_kv_cache():
    """A step a router writes with write_step stays in its model's session; committed, it is kept there,
    so the next call reads only the one token sampled last (not run yet), never the step again."""
    keep_all = solve(make_router("first-token", 20.0))  # each step: a probe token, then the rest of the step
    assert len(keep_all.steps) >= 3 and all(s.author == "draft" for s in keep_all.steps)
    # the probe reads the last token of the step before, the continuation the probe token: never a step again
    assert [s.costs.draft.input_tokens for s in keep_all.steps[1:]] == [2] * (len(keep_all.steps) - 1)
    ahead = solve(make_router("lookahead", 0.0, k=3, verify="score"))  # every drafted step kept, served from the plan
    reads = [s.costs.draft.input_tokens for s in ahead.steps]
    assert reads[1:3] == [0, 0] and reads[3] == 1  # the next round reads one token, not three steps


def test_lookaheads_steps_planned_and_never_served_count_as_thrown_away():
    sol = solve(make_router("lookahead", 0.0, k=3, verify="score"), max_steps=2)  # three steps drafted, two served
    kept = [s for s in sol.steps if s.kind != "forced_answer"]
    assert len(kept) == 2 and all(s.author == "draft" for s in kept) and sol.costs.draft.calls == 3
    assert sol.costs.discarded.output_tokens == sol.costs.draft.output_tokens - sum(s.tokens for s in kept) > 0
    assert sol.costs.discarded.calls == 0  # their calls were counted where they were drafted
    total = sum((s.costs.discarded.output_tokens for s in sol.steps), 0)
    assert total == sol.costs.discarded.output_tokens  # the solution's costs are still its steps' sum
