"""Lookahead's verifier on the testbed: how often the target calls two different steps "aligned", and what
that does to accuracy, against the exact comparison and target-only, on validation problems.

    python benchmarks/lookahead_verifier.py --n 20

Prints each configuration's problems solved (with a Wilson 95% interval) and tokens, then the verifier's
verdicts on the pairs of steps that differ (a drafted step against the target's step at the same prefix).
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="validation problems (default 20)")
    ap.add_argument("--steps", type=int, default=3, help="operations per problem (default 3)")
    ap.add_argument("--k", type=int, default=3, help="steps drafted ahead (default 3)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from tqdm import tqdm

    from eval.stats import wilson
    from eval.synthetic import generate
    from judges.aligned import AlignedJudge, exactly_same
    from reasoning.api import Solver
    from routers import make_router

    problems = generate(args.n, steps=args.steps, seed=0, split="val")
    verdicts: list[tuple[str, str, float]] = []
    score = AlignedJudge.score

    def recorded(self, ctx, a, b):
        s = score(self, ctx, a, b)
        if not exactly_same(a, b) and self.model != "none":
            verdicts.append((a, b, s))
        return s

    AlignedJudge.score = recorded
    kw = dict(draft="testbed-draft", target="testbed-target", step_tokens=96, max_tokens=512, max_steps=12)
    configs = {"target-only": "target-only",
               "lookahead (verifier=target)": make_router("lookahead", None, k=args.k),
               "lookahead (verifier=none)": make_router("lookahead", None, k=args.k, verifier="none")}
    for name, router in configs.items():
        solver = Solver(router=router, **kw)
        sols = [solver.solve(p) for p in tqdm(problems, desc=name)]
        right = sum(p.grade(s.answer_text).correct for s, p in zip(sols, problems))
        lo, hi = wilson(right, len(problems))
        tokens = {st: sum(s.costs.stage(st).output_tokens for s in sols) for st in ("draft", "target")}
        print(f"{name}: {right}/{len(problems)} ({lo:.0%}-{hi:.0%}); tokens written: draft {tokens['draft']}, "
              f"target {tokens['target']}; verifier calls {sum(s.costs.judge.calls for s in sols)}")
    aligned = sum(s >= 0.5 for *_, s in verdicts)
    print(f"differing pairs the target judged: {len(verdicts)}; called aligned (P >= 0.5): {aligned}")
    for a, b, s in verdicts[:5]:
        print(f"  P(aligned) {s:.4f}: drafted {a!r}, target {b!r}")


if __name__ == "__main__":
    main()
