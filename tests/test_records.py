import pytest
from pydantic import ValidationError

from reasoning.types import Costs, Problem, Solution, SolveConfig, StageCost, Step, TokenStats


def _solution() -> Solution:
    costs = Costs(draft=StageCost(calls=2, input_tokens=300, output_tokens=41, seconds=0.1 + 0.2),
                  target=StageCost(calls=1, input_tokens=7, output_tokens=3, seconds=1e-7),
                  discarded=StageCost(calls=1, input_tokens=0, output_tokens=20, seconds=0.3333333333333333))
    steps = [
        Step(index=0, text="3 * 4 = 12", author="draft", tokens=21, draft_text="3 * 4 = 12", draft_tokens=21,
             draft_stats=TokenStats(n_tokens=21, mean_logprob=-0.123456789012345, min_logprob=-3.5,
                                    last_logprob=-1e-9, mean_entropy=0.7),
             score=0.8765432109876543, decision="keep", costs=costs),
        Step(index=1, text="The answer is \\boxed{\\frac{1}{2}}.\n", author="target", kind="answer",
             draft_text="bad", draft_tokens=20, decision="escalate", wasted_escalation=False),
    ]
    cfg = SolveConfig(draft="smollm2-135m", target="gemma3-270m", router="random", threshold=0.25,
                      max_steps=8, max_tokens=512, step_tokens=64, delimiter="\n\n", few_shot=2,
                      temperature=0.0, seed=None)
    return Solution(problem=Problem(question="Q ü ∑ \"quoted\"", id="p1", gold="1/2", images=["a.png"],
                                    meta={"level": 3, "subject": "Algebra"}),
                    steps=steps, answer="\\frac{1}{2}", answer_rule="boxed", stop_reason="answer",
                    costs=costs, wall_seconds=2.000000000001, config=cfg)


def test_solution_json_round_trip_is_lossless():
    sol = _solution()
    text = sol.model_dump_json()
    back = Solution.model_validate_json(text)
    assert back == sol
    assert back.model_dump_json() == text
    assert back.steps[0].draft_stats.last_logprob == -1e-9
    assert back.costs.discarded.seconds == 0.3333333333333333


def test_records_reject_unknown_fields_and_bad_authors():
    with pytest.raises(ValidationError):
        Step(index=0, text="x", author="oracle")
    with pytest.raises(ValidationError):
        Problem(question="q", colour="red")


def test_costs_add_and_acceptance():
    sol = _solution()
    total = Costs()
    total.add(sol.costs)
    total.add(sol.costs)
    assert total.draft.tokens == 2 * (300 + 41)
    assert sol.acceptance() == {"steps": 0.5, "tokens": 21 / 41}
    assert sol.correct is True  # \frac{1}{2} == 1/2 by value


def _routed(*steps: tuple[str, str | None, str | None]) -> Solution:
    """A solution of (author, decision, draft_text) steps, ended by a forced answer the draft wrote."""
    sol = _solution()
    sol.steps = [Step(index=i, text=f"step {i}", author=a, decision=d, draft_text=t)
                 for i, (a, d, t) in enumerate(steps)]
    sol.steps.append(Step(index=len(steps), text="The answer is \\boxed{1}.", author="draft", kind="forced_answer"))
    return sol


@pytest.mark.parametrize("steps, rate", [
    ([("draft", "keep", "a"), ("target", "escalate", "b"), ("draft", "keep", "c"), ("draft", "keep", "d")], 0.25),
    ([("draft", "keep", "a"), ("target", "escalate", None)], 0.5),  # first-token: escalated before any draft step
    ([("target", None, None), ("target", None, None)], 1.0),  # target-only: the target writes every step
    ([("draft", "keep", "a")], 0.0),
])
def test_escalation_rate_is_one_number_for_eval_the_server_and_the_calibration(steps, rate):
    import numpy as np

    from eval.sweep import SweepConfig, _record
    from reasoning.types import escalation_rate
    from routers.arbitrage_model import tau_table
    from specstep.serve import specstep_of

    sol = _routed(*steps)
    assert sol.escalation_rate() == rate
    assert specstep_of(sol)["escalation_rate"] == rate
    cfg = SweepConfig(dataset="synthetic", policies=["random"], escalation_rates=[0.3])
    record = _record(cfg, "k", sol.problem, "random", 0.3, 0.3, sol)
    assert (record.escalation_rate, record.escalation_rate_goal) == (rate, 0.3)  # the rate reached, the goal
    scores = np.array([0.1, 0.4, 0.6, 0.9])
    assert [p.escalation_rate for p in tau_table(scores, [0.0, 0.5, 1.0])] == [1.0, 0.5, 0.0]
    assert escalation_rate(scores > 0.5) == 0.5 and escalation_rate([]) is None
