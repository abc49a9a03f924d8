"""The testbed benchmark: every policy on the same held-out testbed problems, side by side in one run.

    python benchmarks/testbed.py --n 50 --out runs/testbed

Prints, for the testbed pair (testbed-draft -> testbed-target; tiny models on a synthetic task, so
the numbers judge the machinery and the policies, not the method's quality on real models):

1. the goals of the pair: per-token decode latency of the draft over the target (measured side by
   side), the target judge's ROC-AUC separating gold steps from corrupted twins (held-out val split);
2. a sweep over held-out test problems: draft-only, target-only, specreason at several thresholds,
   arbitrage (the shipped testbed router) at several escalation rates, oracle, and random at the
   escalation rates the other routers reached; for each: accuracy with a 95% interval, mean latency
   and FLOPs, escalation rate, speedup over target-only at matched accuracy (wall and FLOPs), the
   area score against random's, and the bound 1 / (c + (1 - a) + j) from the measured draft cost
   ratio c, acceptance a and judge share j.

The sweep is resumable: records are appended to OUT/records.jsonl, so a rerun skips what is done.
RSD is not run: no process reward model exists for the testbed (the judge is the target itself).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DRAFT, TARGET = "testbed-draft", "testbed-target"


def per_token_latency(draft, target, prompt, tokens: int, repeats: int) -> tuple[float, float]:
    """Median decode seconds per token of each model on the same prompt, measured alternately."""
    out = {"draft": [], "target": []}
    for _ in range(repeats):
        for name, backend in (("draft", draft), ("target", target)):
            s = backend.open_session(prompt)
            s.next_token_logprobs(["0"])  # prefill outside the timing
            t0 = time.perf_counter()
            g = s.generate(max_tokens=tokens, ignore_eos=True)
            out[name].append((time.perf_counter() - t0) / max(1, len(g.token_ids)))
            s.close()
    return statistics.median(out["draft"]), statistics.median(out["target"])


def judge_auc(target, problems, seed: int = 0) -> tuple[float, float, int]:
    """ROC-AUC of the target's SpecReason judge on gold steps (positive) against corrupted twins,
    the share of pairs where gold scores higher, and the number of pairs."""
    from eval.synthetic import corrupt_step, gold_steps
    from judges.specreason import judge_on_session
    from reasoning.prompts import Prompt
    from training.train import roc_auc

    rng = random.Random(seed)
    labels, scores, wins, pairs = [], [], 0, 0
    for p in problems:
        gold = gold_steps(p)
        session = target.open_session(Prompt.math(p.question, 0))
        for i, step in enumerate(gold):
            end = "\n\n" if i < len(gold) - 1 else ""
            bad, _ = corrupt_step(p, i, rng)
            good_score = judge_on_session(session, target, step + end)[0]
            bad_score = judge_on_session(session, target, bad + end)[0]
            labels += [True, False]
            scores += [good_score, bad_score]
            wins += good_score > bad_score
            pairs += 1
            session.append(step + end)
        session.close()
    return roc_auc(labels, scores), wins / max(1, pairs), pairs


def _sweep(out: Path, n: int, steps: int, policies: list[str], thresholds=(), rates=(), options=None,
           target: str = TARGET):
    from eval.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(dataset="synthetic", limit=n, synthetic_steps=steps, synthetic_split="test", draft=DRAFT,
                      target=target, policies=policies, thresholds=list(thresholds), escalation_rates=list(rates),
                      router_options=options or {}, limits={"max_steps": 12, "max_tokens": 512, "step_tokens": 96})
    return run_sweep(cfg, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="held-out test problems (default 50)")
    ap.add_argument("--steps", type=int, default=3, help="operations per problem (default 3)")
    ap.add_argument("--out", default="runs/testbed", help="sweep folder (resumable)")
    ap.add_argument("--specreason", default="0.3,0.6,0.9", help="specreason thresholds")
    ap.add_argument("--arbitrage-rates", default="0.15,0.3,0.45", help="arbitrage escalation rates")
    ap.add_argument("--judge-problems", type=int, default=30, help="val problems for the judge's AUC")
    ap.add_argument("--skip-goals", action="store_true", help="only the sweep")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(2)
    from eval.report import write_outputs
    from eval.synthetic import generate
    from reasoning.backends import load_backend
    from reasoning.prompts import Prompt

    draft, target = load_backend(DRAFT), load_backend(TARGET)
    c_params = draft.n_params / target.n_params
    lines = [f"# testbed benchmark: {DRAFT} -> {TARGET}, {args.n} held-out {args.steps}-step problems", ""]
    if not args.skip_goals:
        val = generate(args.judge_problems, steps=args.steps, seed=0, split="val")
        d_tok, t_tok = per_token_latency(draft, target, Prompt.math(val[0].question, 0), 48, 5)
        auc, win, pairs = judge_auc(target, val)
        lines += [f"per-token decode latency: draft {1e3 * d_tok:.1f} ms, target {1e3 * t_tok:.1f} ms, ratio "
                  f"{d_tok / t_tok:.2f} (goal <= 0.4); parameters {draft.n_params / 1e6:.1f}M / "
                  f"{target.n_params / 1e6:.1f}M = {c_params:.2f}",
                  f"target judge on {pairs} gold steps vs corrupted twins ({args.judge_problems} val problems): "
                  f"ROC-AUC {auc:.3f} (goal >= 0.9), gold scored higher in {100 * win:.0f}% of pairs", ""]
        print("\n".join(lines), flush=True)

    out = Path(args.out)
    sr = [float(x) for x in args.specreason.split(",") if x]
    rates = [float(x) for x in args.arbitrage_rates.split(",") if x]
    # each sweep returns the records of its own policies: keep them all
    recs = _sweep(out, args.n, args.steps, ["draft-only", "target-only", "oracle"])
    recs += _sweep(out, args.n, args.steps, ["specreason"], thresholds=sr)
    recs += _sweep(out, args.n, args.steps, ["arbitrage"], rates=rates, options={"model": "testbed"})
    from eval.summary import summarize

    seen = summarize(recs)
    matched = sorted({round(20 * p.escalation_rate) / 20 for p in seen if p.policy in ("arbitrage", "specreason")}
                     | {0.25, 0.5, 0.75})
    matched = [r for r in matched if 0.0 < r < 1.0]
    recs += _sweep(out, args.n, args.steps, ["random"], rates=matched)
    points = write_outputs(recs, out, DRAFT, TARGET)
    body = report(points) + ["", f"curve: {out}/curve.png, report: {out}/report.md"]
    print("\n".join(body))
    (out / "testbed.md").write_text("\n".join(lines + body) + "\n")


def report(points, versus: str | None = None) -> list[str]:
    """The two tables: one row per configuration, then one per policy (speedups at matched accuracy,
    area scores; with `versus`, also each policy's latency against that policy's at matched accuracy)."""
    from eval.summary import area_score, latency_at_accuracy

    ref = {p.policy: p for p in points if p.policy in ("draft-only", "target-only")}
    d, t = ref["draft-only"], ref["target-only"]
    rnd = [p for p in points if p.policy == "random"]
    rnd_area = area_score(rnd, d.accuracy, t.accuracy)

    def fmt_speed(x):
        return "-" if x is None else f"{x:.2f}x"

    rows = ["| config | accuracy (95% CI) | mean s | GFLOPs | escalated | wasted draft tok | judge share "
            "| bound |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        c = p.seconds["draft"] / t.mean_latency if t.mean_latency else 0.0
        j = p.seconds["judge"] / t.mean_latency if t.mean_latency else 0.0
        bound = 1 / (c + p.escalation_rate + j) if c + p.escalation_rate + j > 0 else float("inf")
        rows.append(f"| {p.config} | {100 * p.accuracy:.0f}% ({100 * p.ci_low:.0f}-{100 * p.ci_high:.0f}) | "
                    f"{p.mean_latency:.2f} | {p.mean_flops / 1e9:.1f} | {100 * p.escalation_rate:.0f}% | "
                    f"{p.wasted_draft_tokens:.1f} | {100 * p.judge_share:.0f}% | {bound:.2f}x |")
    heads = ["| policy | speedup at target-only accuracy (wall / FLOPs) | within 2 points (wall / FLOPs) "
             "| area score | minus random's |" + (f" vs {versus} at the best accuracy both reach (wall / FLOPs) |"
                                                   if versus else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if versus else "")]
    other = [p for p in points if p.policy == versus]
    for policy in sorted({p.policy for p in points} - {"draft-only", "target-only"}):
        pts = [p for p in points if p.policy == policy]
        gap = t.accuracy > d.accuracy
        sp = [None] * 4
        if gap:
            for k, goal in enumerate((t.accuracy, t.accuracy - 0.02)):
                lat = latency_at_accuracy(pts, goal)
                fl = latency_at_accuracy(pts, goal, "mean_flops")
                sp[2 * k] = t.mean_latency / lat if lat else None
                sp[2 * k + 1] = t.mean_flops / fl if fl else None
        area = area_score(pts, d.accuracy, t.accuracy)
        diff = "-" if area is None or rnd_area is None else f"{area - rnd_area:+.3f}"
        row = (f"| {policy} | {fmt_speed(sp[0])} / {fmt_speed(sp[1])} | {fmt_speed(sp[2])} / "
               f"{fmt_speed(sp[3])} | {'-' if area is None else f'{area:.3f}'} | {diff} |")
        if versus:
            vs = "-"
            if other and policy != versus:
                acc = min(max(p.accuracy for p in pts), max(p.accuracy for p in other))
                lat, ref_lat = latency_at_accuracy(pts, acc), latency_at_accuracy(other, acc)
                fl, ref_fl = latency_at_accuracy(pts, acc, "mean_flops"), latency_at_accuracy(other, acc, "mean_flops")
                if lat and ref_lat and fl and ref_fl:
                    vs = f"{ref_lat / lat:.2f}x / {ref_fl / fl:.2f}x at {100 * acc:.0f}%"
            row += f" {vs} |"
        heads.append(row)
    return rows + [""] + heads


if __name__ == "__main__":
    main()
