"""Speculative Verdict: the consensus arithmetic, ties and skipping, with the real bundled text models."""

import math

import pytest

from reasoning import ConfigError, Problem
from reasoning.verdict import ANSWER_LEAD, CAP_MARKER, Verdict, _answer_nll, _cap, _consensus, select, shown_paths

QUESTION = "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?"


def test_consensus_is_the_sum_of_gaps_to_each_scorers_own_answer():
    # three distinct answers; experts 0 and 3 gave answer 0, expert 1 answer 1, expert 2 answer 2, expert 4 none
    nll = [[1.0, 2.0, 4.0], [3.0, 1.0, 2.0], [5.0, 3.0, 1.0], [1.5, 2.5, 3.5], [None, None, None]]
    own = [0, 1, 2, 0, None]
    got = _consensus(nll, own)
    want0 = 0 + abs(3 - 1) + abs(5 - 1) + 0  # scorers 1 and 2 see answer 0 as far from their own
    want1 = abs(2 - 1) + 0 + abs(3 - 1) + abs(2.5 - 1.5)
    want2 = abs(4 - 1) + abs(2 - 1) + 0 + abs(3.5 - 1.5)
    assert got == [want0, want1, want2, want0, None] == [6.0, 4.0, 6.0, 6.0, None]  # same answer, same score
    # the tie at 6.0 goes to answer 0 (two experts gave it), in list order; no answer: never selected
    assert select(got, own, 2) == [1, 0] and select(got, own, 5) == [1, 0, 3, 2]


def test_ties_go_to_the_answer_more_experts_gave_then_to_list_order():
    own = [0, 1, 1, 2]
    scores = [1.0, 1.0, 1.0, 1.0]
    assert select(scores, own, 4) == [1, 2, 0, 3]
    assert select([2.0, 1.0, 1.0, 1.0 + 1e-12], own, 2) == [1, 2]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="at least two experts"):
        Verdict(["smollm2-135m"], "gemma3-270m")
    with pytest.raises(ConfigError, match="give exactly one expert"):
        Verdict(["smollm2-135m", "gemma3-270m"], "gemma3-270m", samples=3)
    with pytest.raises(ConfigError, match="m must be between 1 and the number of experts"):
        Verdict(["smollm2-135m"], "gemma3-270m", samples=3, m=4)
    with pytest.raises(ConfigError, match="> 0 when sampling"):
        Verdict(["smollm2-135m"], "gemma3-270m", samples=3, temperature=0)


@pytest.mark.slow
def test_paths_keep_their_head_and_their_boxed_answer_within_the_cap(gemma):
    text = ("Step 1: the first box has 4 apples.\n" + "Every other box has 4 apples too, so we add 4 again.\n" * 30
            + "So there are 12 apples, minus the 2 he eats. The answer is \\boxed{10}.")
    assert gemma.count_tokens(text) > 200
    for budget in (48, 100):
        capped = _cap(gemma, text, budget)
        assert gemma.count_tokens(capped) <= budget
        head, tail = capped.split(CAP_MARKER)
        assert text.startswith(head) and text.endswith(tail) and head.startswith("Step 1")
        assert tail.endswith("\\boxed{10}.") and len(tail) > len(head)  # about 2/3 of the budget is the tail
    assert _cap(gemma, "Short path: \\boxed{3}.", 48) == "Short path: \\boxed{3}."  # fits: unchanged
    shown = shown_paths(gemma, [(text, "10"), ("No answer here.", None)], 48).split("\n")
    assert shown[0] == "Solution 1:" and "Proposed answer: 10" in shown and "Proposed answer: (none)" in shown
    assert shown.index("Proposed answer: 10") < shown.index("Solution 2:") < shown.index("Proposed answer: (none)")
    assert shown[shown.index("Proposed answer: 10") - 1].endswith("\\boxed{10}.")  # the capped path's tail


@pytest.mark.slow
def test_answers_are_scored_with_their_closing_brace(smol):
    v = Verdict(["smollm2-135m"], "smollm2-135m", samples=2, m=2)
    s = smol.open_session(v._prompt(QUESTION, ()))
    s.append(ANSWER_LEAD)
    mark = s.n_tokens
    nll = {}
    for a in ("1", "12"):
        nll[a], fed = _answer_nll(s, a)
        s.rollback(mark)
        assert fed >= smol.count_tokens(a + "}")
    one = s.score("1")  # the old score of "1": its own token only, not whether the answer ends there
    s.rollback(mark)
    assert nll["1"] != pytest.approx(-math.fsum(one.logprobs) / len(one.logprobs), abs=1e-4)
    assert nll["1"] != pytest.approx(nll["12"], abs=1e-3)
    fresh = smol.open_session(v._prompt(QUESTION, ()))  # the same value from a fresh session
    fresh.append(ANSWER_LEAD)
    sc = fresh.score("1}")
    assert -math.fsum(sc.logprobs) / len(sc.logprobs) == pytest.approx(nll["1"], abs=1e-4)


@pytest.mark.slow
def test_disagreeing_sampled_experts_are_scored_and_judged(smol):
    # with seed 0 the two samples (seeds 0 and 1, temperature 0.7) answer 36 and 10
    v = Verdict(["smollm2-135m"], "gemma3-270m", samples=2, m=2, seed=0, max_tokens=80, verdict_tokens=32,
                skip_on_agreement=True)  # they disagree: the verdict runs anyway
    r = v.run(QUESTION)
    assert len(r.candidates) == 2 and r.costs.candidates.calls == 2
    assert all(c.answer is not None for c in r.candidates) and len(r.answers) == 2
    own = [r.answers.index(c.answer) for c in r.candidates]
    # every expert scored every distinct answer, reusing its encoded prompt
    assert r.costs.scoring.calls == 4 and all(x is not None and x >= 0 for row in r.nll for x in row)
    assert r.consensus == pytest.approx(_consensus(r.nll, own))
    # a scorer's value equals a fresh session scoring the same continuation (answer and brace)
    for j in range(2):
        for k, a in enumerate(r.answers):
            s = smol.open_session(v._prompt(QUESTION, ()))
            s.append(ANSWER_LEAD)
            sc = s.score(a + "}")
            assert -math.fsum(sc.logprobs) / len(sc.logprobs) == pytest.approx(r.nll[j][k], abs=1e-3)
    assert sorted(r.selected) == [0, 1] and sorted(r.shown_order) == [0, 1]
    assert not r.verdict_skipped and r.skip_on_agreement and r.costs.verdict.calls == 1
    assert r.answer_source in ("verdict", "consensus") and r.verdict_text is not None
    again = v.run(QUESTION)
    assert again.shown_order == r.shown_order and again.answer == r.answer  # seeded: reproducible
    sol = r.to_solution(Problem(question=QUESTION))
    assert sol.costs.judge.calls == r.costs.scoring.calls and sol.answer == r.answer


@pytest.mark.slow
def test_agreeing_experts_get_a_verdict_unless_skipping_is_asked(smol):
    # two greedy copies of one model give the same path and answer
    v = Verdict(["smollm2-135m", "smollm2-135m"], "gemma3-270m", m=2, max_tokens=80, verdict_tokens=32)
    assert not v.skip_on_agreement  # the paper's behaviour is the default
    r = v.run(QUESTION)
    assert r.candidates[0].text == r.candidates[1].text and r.candidates[0].answer is not None
    assert r.consensus == [0.0, 0.0] and r.costs.scoring.calls == 0  # one distinct answer: nothing to compare
    assert not r.skip_on_agreement and not r.verdict_skipped and r.costs.verdict.calls == 1
    assert r.answer_source in ("verdict", "consensus") and r.verdict_text is not None
    v.skip_on_agreement = True
    r = v.run(QUESTION)
    assert r.skip_on_agreement and r.verdict_skipped and r.costs.verdict.calls == 0 and r.costs.verdict.seconds == 0
    assert r.answer == r.candidates[0].answer and r.answer_source == "agreement" and r.verdict_text is None


def test_cli_rejects_a_bad_image_before_loading_models(cli, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    r = cli("verdict", "What is shown?", "--image", str(bad), "--experts", "no-such-model")
    assert r.returncode == 2 and "notes.png" in r.error_line()  # the image is checked before the spec


@pytest.mark.slow
def test_eval_runs_verdict_as_a_policy(tmp_path):
    from eval.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(dataset="synthetic", limit=2, synthetic_steps=1, policies=["verdict", "draft-only"],
                      draft="testbed-draft", target="testbed-target",
                      router_options={"verdict_samples": 2, "verdict_m": 2}, limits={"max_tokens": 48})
    records = run_sweep(cfg, tmp_path / "out", progress=False)
    v = [r for r in records if r.policy == "verdict"]
    assert len(v) == 2 and len(records) == 4
    for r in v:
        assert r.costs.draft.calls == 2  # two sampled experts
        assert r.solution.config.router == "verdict" and r.answer == r.solution.answer
    again = run_sweep(cfg, tmp_path / "out", progress=False)  # resumes: nothing runs twice
    assert [r.key for r in again] == [r.key for r in records]


@pytest.mark.slow
def test_eval_verdict_policy_takes_the_skip_option(smol):
    from eval.sweep import SweepConfig, _verdict

    def made(**options):
        return _verdict(SweepConfig(dataset="synthetic", policies=["verdict"], router_options=options))

    assert made().skip_on_agreement is False and made(verdict_skip="true").skip_on_agreement is True
    with pytest.raises(ConfigError, match="verdict_skip must be true or false"):
        made(verdict_skip="maybe")
