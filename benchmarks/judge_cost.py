"""Cost of the SpecReason judge as a share of the target writing the same step (goal <= 10%).

The judge puts the draft's step into the target's session "on trial" and reads the ten digit
probabilities in one forward pass. A kept step stays in the session (the target had to read it
anyway), so a kept step's judge cost is the instruction alone; a rejected step's judge cost also
includes reading the step. Run A (tau = 1: every step rejected) measures, on the same prefixes, the
judge and the target writing the step. Run B (tau = 0: every step kept) measures the judge on kept
steps, compared with the mean time the target took per step in run A.

Run: .venv/bin/python benchmarks/judge_cost.py [--problems N]
Bundled tiny models on CPU: this measures the machinery, not the judge's quality.
"""

from __future__ import annotations

import argparse
import statistics

from reasoning import Solver

QUESTIONS = [
    "Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. How many are left?",
    "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. What change does he get?",
    "A farmer has 12 cows and buys 8 more, then sells half of them. How many cows does he have?",
    "Sam reads 15 pages a day for 6 days. His book has 120 pages. How many pages are left?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=len(QUESTIONS))
    args = ap.parse_args()
    print("Bundled tiny models on CPU: this measures the machinery, not the judge's quality.")
    qs = QUESTIONS[: args.problems]

    rejected = Solver(router="specreason", threshold=1.0, max_steps=8)
    ratios, judge_s, target_s, n_target_steps = [], 0.0, 0.0, 0
    for q in qs:
        for s in rejected.solve(q).steps:
            if s.decision != "escalate" or s.index == 0:  # step 0 also reads the prompt
                continue
            ratios.append(s.costs.judge.seconds / s.costs.target.seconds)
            judge_s += s.costs.judge.seconds
            target_s += s.costs.target.seconds
            n_target_steps += 1
    print(f"rejected steps ({len(ratios)}): judge / target writing the same step: "
          f"median {statistics.median(ratios):.1%}, pooled {judge_s / target_s:.1%}")

    kept = Solver(router="specreason", threshold=0.0, max_steps=8)
    kjudge = [s.costs.judge.seconds for q in qs for s in kept.solve(q).steps
              if s.decision == "keep" and s.index > 0]
    mean_target = target_s / n_target_steps
    print(f"kept steps ({len(kjudge)}): judge / mean target step: "
          f"{statistics.mean(kjudge) / mean_target:.1%} (goal <= 10%)")


if __name__ == "__main__":
    main()
