"""Step cost with KV reuse, and controller overhead, on the bundled models (CPU).

(a) seconds per generated token of step 25 over step 2 of one long solution (goal <= 1.2: a step
    costs the same late in a solution as early), and the same ratio without KV reuse (a fresh
    session re-reads the whole prefix for each step) for comparison. Step 1 also pays the prompt.
(b) share of wall time spent outside backend calls in full solves with mixed authors (goal <= 2%).

Run: .venv/bin/python benchmarks/step_cost.py [--models smollm2-135m,gemma3-270m]
The bundled models are tiny; these numbers measure the machinery, not reasoning quality.
"""

from __future__ import annotations

import argparse
import time

from reasoning import Solver
from reasoning.backends import load_backend
from reasoning.prompts import Prompt

QUESTIONS = [
    "Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. How many are left?",
    "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. What change does he get?",
    "A farmer has 12 cows and buys 8 more, then sells half of them. How many cows does he have?",
]
STEP_TOKENS = 16
STEPS = 25


def per_token(step) -> float:
    c = step.costs.draft
    return c.seconds / max(1, c.output_tokens)


def kv_reuse(model: str) -> None:
    solver = Solver(draft=model, router="draft-only", max_steps=STEPS, max_tokens=4096,
                    step_tokens=STEP_TOKENS, delimiter="\n\n\n\n\n\n", stop_on_answer=False, force_answer=False,
                    ignore_eos=True, stop_on_repeat=False, end_stops=())
    sol = solver.solve(QUESTIONS[0] + " Explain every detail at length.")
    steps = sol.steps
    if len(steps) < STEPS:
        print(f"{model}: solution ended after {len(steps)} steps ({sol.stop_reason}); need {STEPS}")
        return
    r_1 = per_token(steps[STEPS - 1]) / per_token(steps[0])
    r_2 = per_token(steps[STEPS - 1]) / per_token(steps[1])

    # Without reuse: a fresh session per step re-reads the prompt and all earlier steps.
    backend = load_backend(model)
    prompt = Prompt.math(QUESTIONS[0] + " Explain every detail at length.", 2)
    prefix_texts = [""]
    for s in steps:
        prefix_texts.append(prefix_texts[-1] + s.text + "\n\n")

    def fresh(k: int) -> float:
        best = float("inf")
        for _ in range(2):
            sess = backend.open_session(prompt)
            sess.append(prefix_texts[k])
            t0 = time.perf_counter()
            g = sess.generate(max_tokens=STEP_TOKENS, ignore_eos=True)
            best = min(best, (time.perf_counter() - t0) / max(1, g.usage.output_tokens))
        return best

    r_fresh = fresh(STEPS - 1) / fresh(1)
    ctx = sum(s.tokens for s in steps)
    print(f"{model}: {len(steps)} steps, {ctx} solution tokens")
    print(f"  per-token cost, step {STEPS} / step 2 with KV reuse:     {r_2:.2f}  (goal <= 1.2)")
    print(f"  per-token cost, step {STEPS} / step 1 (step 1 has the prompt): {r_1:.2f}")
    print(f"  per-token cost, step {STEPS} / step 2 without reuse:     {r_fresh:.2f}")


def overhead() -> None:
    solver = Solver(router="random", threshold=0.5, max_steps=8)
    wall = backend = 0.0
    for q in QUESTIONS:
        sol = solver.solve(q)
        wall += sol.wall_seconds
        backend += sol.costs.draft.seconds + sol.costs.judge.seconds + sol.costs.target.seconds
    share = (wall - backend) / wall
    print(f"controller overhead: {100 * share:.2f}% of {wall:.1f}s wall outside backend calls (goal <= 2%)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    args = ap.parse_args()
    print("Bundled tiny models on CPU: these numbers measure the machinery, not reasoning quality.")
    for m in args.models.split(","):
        kv_reuse(m)
    overhead()


if __name__ == "__main__":
    main()
