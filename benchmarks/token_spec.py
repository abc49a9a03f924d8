"""Step-level plus token-level speculation: the same problems on vLLM without and with n-gram speculative
decoding on the target (no extra weights), side by side in one run; prints the wall-time ratio and whether
texts agree.

Run: .venv-vllm/bin/python benchmarks/token_spec.py [--n 6] [--k 4]

Tiny bundled models on a 2-core CPU: the ratio measures the machinery, not the method's quality.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from eval.synthetic import generate
from reasoning.api import Solver

BASE = "?kv_cache_gb=1&max_model_len=2048"


def one_mode(args: argparse.Namespace) -> None:
    """Solve the problems with one setting; print one JSON line (wall seconds, tokens, texts)."""
    problems = generate(args.n, steps=2, seed=5)
    extra = f"&speculative=ngram&num_speculative_tokens={args.k}" if args.mode == "ngram" else ""
    # on the target only: vLLM 0.32 on CPU fails to start a second engine when the first uses speculation
    solver = Solver(f"vllm:smollm2-135m{BASE}", f"vllm:gemma3-270m{BASE}{extra}", args.router,
                    args.threshold, max_steps=4, step_tokens=64, max_tokens=256)
    solver.solve(problems[0])  # warm-up
    t0 = time.perf_counter()
    sols = [solver.solve(p) for p in problems]
    wall = time.perf_counter() - t0
    toks = sum(s.costs.draft.output_tokens + s.costs.target.output_tokens for s in sols)
    print("RESULT " + json.dumps({"wall": wall, "tokens": toks, "texts": [s.text for s in sols]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--k", type=int, default=4, help="speculative tokens per step of vLLM")
    ap.add_argument("--router", default="specreason")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--mode", choices=["plain", "ngram"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return one_mode(args)
    # one process per setting: vLLM 0.32 on CPU fails to start a third engine in one process
    results = {}
    for mode in ("plain", "ngram"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode], capture_output=True,
                             text=True, check=True).stdout
        results[mode] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        r = results[mode]
        print(f"{mode:6s}: {r['wall']:6.1f} s for {args.n} problems, {r['tokens'] / r['wall']:6.1f} sampled tokens/s")
    same = sum(a == b for a, b in zip(results["plain"]["texts"], results["ngram"]["texts"]))
    print(f"speed-up from token-level n-gram speculation on top of step-level: "
          f"{results['plain']['wall'] / results['ngram']['wall']:.2f}x; same text for {same}/{args.n} problems")


if __name__ == "__main__":
    main()
