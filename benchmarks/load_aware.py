"""Load-aware routing, measured: the same concurrent problems with and without `load_slope`, side by side.

Under load, the router's threshold moves towards keeping the draft's step by `load_slope` for every target
call queued or running beyond `load_free`, so escalations are shed first. This prints, for each setting,
the escalation rate, the mean latency of a problem, the wall time of the batch and the accuracy.

Run: .venv/bin/python benchmarks/load_aware.py [--n 6] [--slope 0.1]
     (default engines: llama.cpp; --draft/--target take any spec, e.g. vllm:... in .venv-vllm)

Tiny bundled models on a 2-core CPU: these numbers show the mechanism, not the method's quality.
"""

from __future__ import annotations

import argparse
import statistics
import time

from eval.synthetic import generate
from reasoning.api import Solver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draft", default="llamacpp:smollm2-135m")
    ap.add_argument("--target", default="llamacpp:gemma3-270m")
    ap.add_argument("--router", default="random", help="random: escalate with probability tau")
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--slope", type=float, default=0.2)
    ap.add_argument("--free", type=int, default=0)
    ap.add_argument("--n", type=int, default=6, help="problems solved at once")
    args = ap.parse_args()
    problems = generate(args.n, steps=2, seed=3)
    print(f"{args.n} concurrent problems, draft {args.draft}, target {args.target}, router {args.router}"
          f"@{args.threshold}. Tiny models: the mechanism, not the method's quality.")
    Solver(args.draft, args.target, args.router, args.threshold).solve(problems[0], max_steps=1)  # warm-up
    for slope in (0.0, args.slope):
        opts = {"load_slope": slope, "load_free": args.free} if slope else {}
        solver = Solver(args.draft, args.target, args.router, args.threshold, router_options=opts,
                        max_steps=6, step_tokens=64, max_tokens=256)
        t0 = time.perf_counter()
        sols = solver.solve_many(problems, batch_size=args.n)
        wall = time.perf_counter() - t0
        steps = [s for sol in sols for s in sol.steps if s.decision is not None]
        esc = sum(s.decision == "escalate" for s in steps) / max(1, len(steps))
        loads = [s.target_load for s in steps if s.target_load is not None]
        acc = sum(bool(s.correct) for s in sols) / len(sols)
        print(f"load_slope {slope:4.2f}: escalated {100 * esc:5.1f}% of {len(steps)} steps, "
              f"mean problem latency {statistics.mean(s.wall_seconds for s in sols):6.1f} s, "
              f"batch wall {wall:6.1f} s, accuracy {100 * acc:5.1f}%"
              + (f", mean target load seen {statistics.mean(loads):.2f}" if loads else ""))


if __name__ == "__main__":
    main()
