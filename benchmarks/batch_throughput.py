"""Throughput of `solve_many` (problems in lockstep, engine calls batched) over the same problems solved one
by one, on the same engine in one run. The goal on vLLM is >= 4x with 8 problems.

Run (vLLM needs its own environment, see setup-vllm.sh):
  .venv-vllm/bin/python benchmarks/batch_throughput.py
  .venv/bin/python benchmarks/batch_throughput.py --draft llamacpp:smollm2-135m --target llamacpp:gemma3-270m

Tiny bundled models on a 2-core CPU: the ratio measures the machinery, not the method's quality.
"""

from __future__ import annotations

import argparse
import logging
import time

from eval.synthetic import generate
from reasoning.api import Solver
from reasoning.batching import LOCKSTEP

VLLM_OPTS = "?kv_cache_gb=1&max_model_len=2048"


def run(solver: Solver, problems, batched: bool, n: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    sols = solver.solve_many(problems, batch_size=n) if batched else [solver.solve(p) for p in problems]
    return time.perf_counter() - t0, sols


def tokens(sols) -> int:
    return sum(s.costs.draft.output_tokens + s.costs.target.output_tokens + s.costs.discarded.output_tokens
               for s in sols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draft", default="vllm:smollm2-135m" + VLLM_OPTS)
    ap.add_argument("--target", default="vllm:gemma3-270m" + VLLM_OPTS)
    ap.add_argument("--router", default="specreason")
    ap.add_argument("--threshold", type=lambda t: None if t == "none" else float(t), default=0.5)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="steps per synthetic problem")
    ap.add_argument("--debug", action="store_true", help="log every engine batch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.debug:
        logging.getLogger("reasoning.batching").setLevel(logging.DEBUG)
    solver = Solver(args.draft, args.target, args.router, args.threshold, max_steps=4, step_tokens=48,
                    max_tokens=192)
    problems = generate(args.n, steps=args.steps, seed=1)
    # warm-up: vLLM compiles its graphs per batch shape the first time it sees one (tens of seconds on a
    # CPU), so both modes run once on other problems before anything is timed
    warm = generate(args.n, steps=args.steps, seed=99)
    solver.solve(warm[0])
    solver.solve_many(warm, batch_size=args.n)
    one_s, one = run(solver, problems, False, args.n)
    loops = [b.decoder for b in (solver.draft, solver.target) if b is not None and "decoder" in vars(b)]
    b0, r0 = LOCKSTEP.batches, LOCKSTEP.batched_requests
    d0 = [(d.forwards, d.row_steps) for d in loops]
    many_s, many = run(solver, problems, True, args.n)
    batches, reqs = LOCKSTEP.batches - b0, LOCKSTEP.batched_requests - r0
    if not batches:  # transformers decodes in its own loop: count its decode steps and the rows in them
        batches = sum(d.forwards - f for d, (f, _) in zip(loops, d0))
        reqs = sum(d.row_steps - r for d, (_, r) in zip(loops, d0))
    same = sum(a.text == b.text for a, b in zip(one, many))
    print(f"draft {args.draft}  target {args.target}  router {args.router}@{args.threshold}  {args.n} problems")
    print(f"one by one : {one_s:7.1f} s  {args.n / one_s:6.3f} problems/s  {tokens(one) / one_s:7.1f} tokens/s")
    print(f"solve_many : {many_s:7.1f} s  {args.n / many_s:6.3f} problems/s  {tokens(many) / many_s:7.1f} tokens/s"
          f"  ({reqs} calls in {batches} engine batches, {reqs / max(batches, 1):.1f} per batch; on transformers: "
          "rows in decode steps)")
    print(f"throughput ratio (batched / one by one): {one_s / many_s:.2f}x; same text for {same}/{args.n} problems")


if __name__ == "__main__":
    main()
