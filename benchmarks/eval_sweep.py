"""A small real accuracy-versus-latency sweep with the bundled models; writes the curve and report.

Run: .venv/bin/python benchmarks/eval_sweep.py [--dataset synthetic] [--limit 12] [--out runs/eval-sweep]
The default, one-step synthetic problems, needs no files and is easy enough for the tiny models to
get some right; named sets (`--dataset gsm8k`) are read from ../shared/data/unified or --data-dir.

The bundled models are tiny (SmolLM2-135M draft, Gemma-3-270M base target) and weak at math:
the curve shows that the machinery works, not how good step-level speculation is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.report import write_outputs
from eval.sweep import SweepConfig, run_sweep

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--steps", type=int, default=1, help="steps per synthetic problem")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "unified"))
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--out", default="runs/eval-sweep")
    args = ap.parse_args()
    print("Tiny bundled models (SmolLM2-135M -> Gemma-3-270M): these numbers show the machinery, "
          "not the quality of the method.")
    cfg = SweepConfig(dataset=args.dataset, data_dir=None if args.dataset == "synthetic" else args.data_dir,
                      limit=args.limit, synthetic_steps=args.steps,
                      policies=["draft-only", "target-only", "random", "arbitrage", "specreason"],
                      thresholds=[0.25, 0.5, 0.75],
                      limits={"max_steps": 8, "step_tokens": 96, "max_tokens": 512})
    records = run_sweep(cfg, args.out)
    points = write_outputs(records, args.out, cfg.draft, cfg.target)
    for p in points:
        print(f"{p.config:>18s}  acc {100 * p.accuracy:5.1f}% [{100 * p.ci_low:.0f}-{100 * p.ci_high:.0f}]  "
              f"mean {p.mean_latency:6.2f}s  p90 {p.p90_latency:6.2f}s  escalated {100 * p.escalation_rate:5.1f}%"
              f"{'  pareto' if p.pareto else ''}")
    print(f"wrote {args.out}/curve.png and report.md (tiny models: not the method's quality)")


if __name__ == "__main__":
    main()
