"""Speculative Verdict: the consensus arithmetic, ties and skipping, with the real bundled text models."""

import math
import subprocess
import sys

import pytest

from reasoning import ConfigError
from reasoning.verdict import ANSWER_LEAD, Verdict, _cap, _consensus, select

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
def test_sampled_experts_consensus_and_verdict_on_real_models(smol):
    v = Verdict(["smollm2-135m"], "gemma3-270m", samples=4, m=2, seed=1, max_tokens=80, verdict_tokens=64)
    r = v.run(QUESTION)
    assert len(r.candidates) == 4 and r.costs.candidates.calls == 4
    own = [next((k for k, a in enumerate(r.answers) if c.answer is not None and a == c.answer), None)
           for c in r.candidates]
    answering = [j for j, k in enumerate(own) if k is not None]
    if len(r.answers) >= 2:
        # every answering expert scored every distinct answer, reusing its encoded prompt
        assert r.costs.scoring.calls == len(answering) * len(r.answers)
        for j in answering:
            assert all(x is not None and x >= 0 for x in r.nll[j])
        assert r.consensus == pytest.approx(_consensus(r.nll, own))
        # a scorer's value equals a fresh session scoring the same answer after the same prompt
        j, k = answering[0], 0
        s = smol.open_session(v._prompt(QUESTION, ()))
        s.append(ANSWER_LEAD)
        sc = s.score(r.answers[k])
        assert -math.fsum(sc.logprobs) / len(sc.logprobs) == pytest.approx(r.nll[j][k], abs=1e-3)
    ranked = [r.consensus[i] for i in r.selected]
    assert ranked == sorted(ranked) and len(r.selected) == min(2, len(answering))
    assert sorted(r.shown_order) == sorted(r.selected) or r.verdict_skipped
    if r.verdict_skipped:
        assert r.costs.verdict.calls == 0 and r.answer_source == "agreement"
    else:
        assert r.costs.verdict.calls == 1 and r.answer_source in ("verdict", "consensus")
    again = v.run(QUESTION)
    assert again.shown_order == r.shown_order and again.answer == r.answer  # seeded: reproducible
    sol = r.to_solution(__import__("reasoning").Problem(question=QUESTION))
    assert sol.costs.judge.calls == r.costs.scoring.calls and sol.answer == r.answer


@pytest.mark.slow
def test_agreeing_experts_skip_the_verdict(smol):
    # two greedy copies of one model give the same path: consensus 0, no verdict call
    v = Verdict(["smollm2-135m", "smollm2-135m"], "gemma3-270m", m=2, max_tokens=80)
    r = v.run(QUESTION)
    assert r.candidates[0].text == r.candidates[1].text
    if r.candidates[0].answer is not None:
        assert r.verdict_skipped and r.costs.verdict.calls == 0 and r.costs.verdict.seconds == 0
        assert r.consensus == [0.0, 0.0] and r.answer == r.candidates[0].answer
        assert r.costs.scoring.calls == 0  # one distinct answer: nothing to compare


@pytest.mark.slow
def test_paths_are_capped_in_tokens(gemma):
    text = "The first box has 4 apples and so does every other box, " * 20
    capped = _cap(gemma, text, 16)
    assert gemma.count_tokens(capped) <= 16 and text.startswith(capped) and len(capped) > 20


def test_cli_rejects_a_bad_image_before_loading_models(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "reasoning.cli", "verdict", "What is shown?", "--image", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "notes.png" in r.stderr


@pytest.mark.slow
def test_eval_runs_verdict_as_a_policy(tmp_path):
    from eval.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(dataset="synthetic", limit=2, synthetic_steps=1, policies=["verdict", "draft-only"],
                      router_options={"verdict_samples": 2, "verdict_m": 2}, limits={"max_tokens": 64})
    records = run_sweep(cfg, tmp_path / "out", progress=False)
    v = [r for r in records if r.policy == "verdict"]
    assert len(v) == 2 and len(records) == 4
    for r in v:
        assert r.costs.draft.calls == 2  # two sampled experts
        assert r.solution.config.router == "verdict" and r.answer == r.solution.answer
    again = run_sweep(cfg, tmp_path / "out", progress=False)  # resumes: nothing runs twice
    assert [r.key for r in again] == [r.key for r in records]
