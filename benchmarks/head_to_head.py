"""Head to head: every step policy, and the target with token-level speculative decoding, on the same
held-out testbed problems.

    python benchmarks/head_to_head.py --n 30 --out runs/h2h

Runs, into the folder of benchmarks/testbed.py (whose records it reuses: same problems, same
limits): draft-only, target-only, specreason, arbitrage, oracle and random (the anchors);
first-token at entropy thresholds; cascade (the draft's confidence gate, then the shipped Arbitrage
router's gate, then the target's judge) and best-of-n (n = 3) at judge thresholds; handoff at
entropy thresholds; lookahead (k = 3) at judge thresholds. Then, in OUT/token-spec (another target
spec, so another folder), the baseline users would pick instead: the target with token-level
speculative decoding from the same draft (`hf:testbed-target?assistant=testbed-draft`, greedy, lossless),
and step-level policies composed with it; their configurations are named `POLICY+token-spec`.
Prints the configuration table (accuracy with a 95% interval, latency, FLOPs, escalation, wasted
draft tokens, judge share) and the policy table (speedup over target-only at matched accuracy, area
score against random's, and each policy against arbitrage at the best accuracy both reach); the
curve holds every policy's frontier.

The testbed pair is tiny models on a synthetic task: the numbers compare the policies' machinery,
not their quality on real models. RSD is not run: no process reward model exists for the testbed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testbed  # noqa: E402  (benchmarks/testbed.py: the sweep and the tables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="held-out test problems (default 30)")
    ap.add_argument("--steps", type=int, default=3, help="operations per problem (default 3)")
    ap.add_argument("--out", default="runs/h2h", help="sweep folder (resumable; testbed.py's records are reused)")
    ap.add_argument("--first-token", default="0.001,0.003,0.01,0.04",
                    help="first-token entropy thresholds (nats; the testbed draft's are tiny)")
    ap.add_argument("--cascade", default="0.6,0.9", help="cascade judge thresholds")
    ap.add_argument("--best-of-n", default="0.6,0.9", help="best-of-n judge thresholds")
    ap.add_argument("--handoff", default="0.5,1.0,1.5,2.5", help="handoff entropy thresholds (nats)")
    ap.add_argument("--lookahead", default="0.6,0.9", help="lookahead judge thresholds")
    ap.add_argument("--spec-tokens", type=int, default=2,
                    help="tokens the assistant proposes per target pass (2 measured best on this CPU)")
    ap.add_argument("--token-spec-handoff", default="0.5,1.0",
                    help="handoff thresholds composed with token-level speculation")
    ap.add_argument("--policies", default="", help="run only these (comma-separated; draft-only and target-only "
                    "always run; `+token-spec` for the compositions); default: all")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(2)
    from eval.report import write_outputs
    from eval.summary import summarize

    out, n, steps = Path(args.out), args.n, args.steps

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x]

    only = {x.strip() for x in args.policies.split(",") if x.strip()}

    def sweep(folder, policy, **kw):
        return testbed._sweep(folder, n, steps, [policy], **kw) if not only or policy in only else []

    recs = testbed._sweep(out, n, steps, ["draft-only", "target-only"])
    recs += sweep(out, "oracle")
    recs += sweep(out, "specreason", thresholds=[0.3, 0.6, 0.9])
    recs += sweep(out, "arbitrage", rates=[0.15, 0.3, 0.45], options={"model": "testbed"})
    recs += sweep(out, "first-token", thresholds=floats(args.first_token))
    recs += sweep(out, "cascade", thresholds=floats(args.cascade),
                  options={"arbitrage": "testbed", "confident": "-0.02"})
    recs += sweep(out, "best-of-n", thresholds=floats(args.best_of_n), options={"n": "3"})
    recs += sweep(out, "handoff", thresholds=floats(args.handoff))
    recs += sweep(out, "lookahead", thresholds=floats(args.lookahead), options={"k": "3"})
    # the target with token-level speculative decoding, alone and under step-level policies
    if not only or "+token-spec" in only:
        spec_target = f"hf:{testbed.TARGET}?assistant={testbed.DRAFT}&spec_tokens={args.spec_tokens}"
        tok = out / "token-spec"
        composed = testbed._sweep(tok, n, steps, ["target-only"], target=spec_target)
        composed += testbed._sweep(tok, n, steps, ["arbitrage"], rates=[0.3, 0.45], options={"model": "testbed"},
                                   target=spec_target)
        composed += testbed._sweep(tok, n, steps, ["handoff"], thresholds=floats(args.token_spec_handoff),
                                   target=spec_target)
        recs += [r.model_copy(update={"policy": f"{r.policy}+token-spec"}) for r in composed]
    seen = summarize(recs)
    matched = sorted({round(20 * p.escalation_rate) / 20 for p in seen if p.policy not in ("draft-only",
                      "target-only", "oracle", "random")} | {0.25, 0.5, 0.75})
    recs += sweep(out, "random", rates=[r for r in matched if 0.0 < r < 1.0])
    points = write_outputs(recs, out, testbed.DRAFT, testbed.TARGET)
    head = [f"# head to head: {testbed.DRAFT} -> {testbed.TARGET}, {n} held-out {steps}-step problems", ""]
    body = testbed.report(points, versus="arbitrage") + ["", f"curve: {out}/curve.png, report: {out}/report.md"]
    print("\n".join(body))
    (out / "head_to_head.md").write_text("\n".join(head + body) + "\n")


if __name__ == "__main__":
    main()
