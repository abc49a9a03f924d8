"""The baseline users would pick instead, on the testbed pair: the target with token-level speculative
decoding from the same draft (`hf:testbed-target?assistant=testbed-draft`, greedy, lossless), against the
target alone, Arbitrage and two-way handoff with and without it, on the test problems of
benchmarks/testbed.py, in wall seconds.

    python benchmarks/token_spec_testbed.py --n 50 --out runs/token-spec   # resumable

One solve at a time (token-level speculation decodes one sequence), nothing else should run. For each
problem the six configurations run in a random order seeded by the problem (so that drift hits all of
them alike); each solve is appended to OUT/records.jsonl as it ends, and a rerun solves only what is
missing. Prints, per configuration, accuracy, mean wall seconds and GFLOPs, and the paired-bootstrap 95%
interval of target-only's mean seconds over each configuration's, with how many answers differ from
target-only's.
Wall seconds only: token-level speculation has no latency profile here (its cost depends on how many
proposed tokens the target accepts).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testbed  # noqa: E402  (benchmarks/testbed.py: the problems and limits)


def configs(spec_tokens: int, rate: float, handoff: float) -> dict[str, tuple[str, str, float | None, dict]]:
    """name -> (target spec, router, threshold, router options)."""
    spec = f"hf:{testbed.TARGET}?assistant={testbed.DRAFT}&spec_tokens={spec_tokens}"
    arb = {"model": "testbed", "escalation_rate": rate}
    return {"target-only": (testbed.TARGET, "target-only", None, {}),
            "target-only+token-spec": (spec, "target-only", None, {}),
            f"arbitrage@rate={rate:g}": (testbed.TARGET, "arbitrage", None, arb),
            f"arbitrage@rate={rate:g}+token-spec": (spec, "arbitrage", None, arb),
            f"handoff@{handoff:g}": (testbed.TARGET, "handoff", handoff, {}),
            f"handoff@{handoff:g}+token-spec": (spec, "handoff", handoff, {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="test problems (the first N of benchmarks/testbed.py's)")
    ap.add_argument("--spec-tokens", type=int, default=2, help="tokens the assistant proposes per target pass")
    ap.add_argument("--rate", type=float, default=0.45, help="Arbitrage's escalation rate (0.45: chosen on "
                    "validation problems by benchmarks/testbed.py)")
    ap.add_argument("--handoff", type=float, default=0.5, help="two-way handoff's entropy threshold (0.5: chosen "
                    "on validation problems by benchmarks/head_to_head.py)")
    ap.add_argument("--configs", default="", help="run only these configurations (comma-separated names, as "
                    "printed; target-only always runs); default: all")
    ap.add_argument("--out", default="runs/token-spec")
    args = ap.parse_args()
    if args.n < 1 or args.spec_tokens < 1 or not 0 <= args.rate <= 1:
        ap.error("--n and --spec-tokens must be at least 1, --rate in [0, 1]")
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(2)
    from eval.stats import Resampler, paired, wilson
    from eval.synthetic import generate
    from reasoning import jsonl
    from reasoning.api import Solver
    from routers import make_router

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    # a torn last line (a crash mid-write) is cut off and solved again
    done = {(r["problem"], r["config"]): r for r in jsonl.read(path, json.loads, "not a record").values}
    problems = generate(args.n, steps=3, seed=testbed.SEED, split="test")
    limits = {"max_steps": 12, "max_tokens": 512, "step_tokens": 96}
    table = configs(args.spec_tokens, args.rate, args.handoff)
    if args.configs:
        wanted = {"target-only", *(c.strip() for c in args.configs.split(",") if c.strip())}
        if wanted - set(table):
            ap.error(f"unknown configuration(s) {', '.join(sorted(wanted - set(table)))}: choose from "
                     f"{', '.join(table)}")
        table = {k: v for k, v in table.items() if k in wanted}
    solvers: dict[str, Solver] = {}
    with jsonl.Appender(path) as f:
        for p in problems:
            names = list(table)
            random.Random(p.id).shuffle(names)
            for name in names:
                if (p.id, name) in done:
                    continue
                target, router, tau, opts = table[name]
                if name not in solvers:
                    solvers[name] = Solver(testbed.DRAFT, target, make_router(router, tau, **opts), **limits)
                sol = solvers[name].solve(p)
                ok = p.grade(sol.answer_text).correct
                r = {"problem": p.id, "config": name, "answer": sol.answer, "correct": ok, "seconds": sol.wall_seconds,
                     "target_tokens": sol.costs.target.output_tokens, "flops": sol.costs.flops}
                f.write(r)
                done[(p.id, name)] = r
    ids = {p.id for p in problems}
    rows = [(c, pid, {"seconds": r["seconds"], "correct": float(r["correct"])}) for (pid, c), r in done.items()
            if pid in ids and c in table]
    data = paired(rows)
    rs = Resampler(data, n_boot=2000, seed=0)
    base = data.row("target-only")
    print(f"token-level speculation on the testbed pair: {len(data.problems)} test problems, one solve at a time")
    print("| config | accuracy (95% CI) | mean wall s | GFLOPs | target-only's seconds over this (95% CI) | "
          "answers unlike target-only's |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in data.configs:
        i = data.row(c)
        est = rs.estimate(lambda m, i=i: float(m["seconds"][base] / m["seconds"][i]))
        differ = sum(done[(pid, c)]["answer"] != done[(pid, "target-only")]["answer"] for pid in data.problems)
        flops = [done[(pid, c)].get("flops") for pid in data.problems]  # absent in records of older runs
        gflops = f"{sum(flops) / len(flops) / 1e9:.1f}" if None not in flops else "-"
        right = int(data.values['correct'][i].sum())
        lo, hi = wilson(right, len(data.problems))
        print(f"| {c} | {right / len(data.problems):.1%} ({100 * lo:.0f}-{100 * hi:.0f}) | "
              f"{data.values['seconds'][i].mean():.2f} | {gflops} | {est.value:.2f}x ({est.low:.2f}-{est.high:.2f}) | "
              f"{differ} |")


if __name__ == "__main__":
    main()
