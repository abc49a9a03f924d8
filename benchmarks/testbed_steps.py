"""Which steps a testbed target gets wrong: each operation step of three-step problems written from the
gold prefix (teacher-forced, greedy) and checked exactly, counted by operation and by whether it
regroups (a carry or borrow at any digit, a long division: `training.testbed.regroups`).

    python benchmarks/testbed_steps.py --adapter DIR/phases/target-7/target --split train --seed 11 --n 80

Run it on train problems of a seed that training did not draw from (the pool is seed 0), never on test
problems: it is for choosing what to train on. Prints a table; --out writes every step as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", required=True, help="a testbed target adapter folder")
    ap.add_argument("--split", choices=("train", "val"), default="train", help="never test (default train)")
    ap.add_argument("--seed", type=int, default=11, help="the problems' seed (default 11)")
    ap.add_argument("--n", type=int, default=80, help="three-step problems (default 80)")
    ap.add_argument("--concurrency", type=int, default=8, help="problems side by side (default 8)")
    ap.add_argument("--out", help="write each step (problem, index, operation, right, text) as JSON lines here")
    args = ap.parse_args()
    if args.n < 1 or args.concurrency < 1:
        ap.error(f"--n and --concurrency must be at least 1, got {args.n} and {args.concurrency}")
    if not Path(args.adapter).is_dir():
        ap.error(f"--adapter {args.adapter}: no such folder")
    logging.basicConfig(level=logging.WARNING)
    import torch
    from testbed_choose import steps_from_gold  # benchmarks/testbed_choose.py: the same steps it checks

    from eval.synthetic import check_step, generate, gold_steps, operations
    from reasoning.backends import load_backend
    from reasoning.batching import for_each
    from reasoning.testbed import read_manifest
    from training.testbed import regroups

    torch.set_num_threads(2)
    backend = load_backend(f"testbed-target?adapter={args.adapter}")
    style = read_manifest(Path(args.adapter)).step_style
    rows: list[dict] = []
    lock = threading.Lock()

    def one(p) -> None:
        texts = steps_from_gold(backend, p, style)
        out = [{"problem_id": p.id, "index": i, "operation": op.sign, "a": op.a, "k": op.k, "regroups": regroups(op),
                "right": check_step(p, i, text), "text": text.strip(), "gold": step}
               for i, (text, step, op) in enumerate(zip(texts, gold_steps(p, style), operations(p)))]
        with lock:
            rows.extend(out)

    for_each(one, generate(args.n, steps=3, seed=args.seed, split=args.split), args.concurrency)
    rows.sort(key=lambda r: (r["problem_id"], r["index"]))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    right, total = Counter(), Counter()
    for r in rows:
        key = (r["operation"], r["regroups"])
        total[key] += 1
        right[key] += r["right"]
    print("| operation | regroups | right / steps |")
    print("| --- | --- | --- |")
    for key in sorted(total):
        print(f"| {key[0]} | {'yes' if key[1] else 'no'} | {right[key]}/{total[key]} |")
    for flag in (True, False):
        n = sum(v for k, v in total.items() if k[1] is flag)
        wrong = n - sum(v for k, v in right.items() if k[1] is flag)
        print(f"{'regrouping' if flag else 'other'} steps wrong: {wrong}/{n}")


if __name__ == "__main__":
    main()
