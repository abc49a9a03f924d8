"""Write summary.json, summary.csv, curve.png and report.md for a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eval.records import EvalRecord
from eval.summary import Point, area_score, latency_at_accuracy, summarize

TINY_NOTE = ("Models: {draft} (draft) and {target} (target). If these are the bundled tiny models, the numbers "
             "measure the machinery, not the method: the models are weak at math.")


def _ref(points: list[Point], policy: str) -> Point | None:
    return next((p for p in points if p.policy == policy), None)


def speedup_between(a: list[Point], b: list[Point], cost: str = "mean_latency") -> tuple[float | None, float]:
    """How much cheaper policy `a` is than policy `b` at matched accuracy: b's cost over a's at the highest
    accuracy both curves reach (None when either reaches it at no cost); and that accuracy."""
    goal = min(max(p.accuracy for p in a), max(p.accuracy for p in b))
    ca, cb = latency_at_accuracy(a, goal, cost), latency_at_accuracy(b, goal, cost)
    return (cb / ca if ca and cb else None), goal


def headline(points: list[Point]) -> dict[str, dict]:
    """Per policy: speedup over target-only at matched accuracy (only where target-only is more accurate
    than draft-only: otherwise there is nothing to match), the area score, and the speedup over every
    other policy at the highest accuracy both reach (`versus`, wall and FLOPs)."""
    draft, target = _ref(points, "draft-only"), _ref(points, "target-only")
    gap = draft is not None and target is not None and target.accuracy > draft.accuracy
    policies = sorted({p.policy for p in points} - {"draft-only", "target-only"})
    by = {q: [p for p in points if p.policy == q] for q in policies}
    out: dict[str, dict] = {}
    for policy in policies:
        pts = by[policy]
        row: dict = {"speedup_at_target_accuracy": None, "flops_speedup_at_target_accuracy": None, "area_score": None,
                     "versus": {}}
        for other in policies:
            if other != policy:
                wall, goal = speedup_between(pts, by[other])
                row["versus"][other] = {"accuracy": goal, "wall": wall,
                                        "flops": speedup_between(pts, by[other], "mean_flops")[0]}
        if target is not None and gap:
            lat = latency_at_accuracy(pts, target.accuracy)
            row["speedup_at_target_accuracy"] = None if lat is None or lat <= 0 else target.mean_latency / lat
            fl = latency_at_accuracy(pts, target.accuracy, "mean_flops")
            row["flops_speedup_at_target_accuracy"] = None if fl is None or fl <= 0 else target.mean_flops / fl
        if draft is not None and target is not None:
            row["area_score"] = area_score(pts, draft.accuracy, target.accuracy)
        out[policy] = row
    return out


COLUMNS = ["config", "policy", "threshold", "escalation_rate_goal", "n", "correct", "accuracy", "ci_low", "ci_high",
           "mean_latency", "p90_latency", "target_token_share", "escalation_rate", "wasted_escalations",
           "format_failures", "mean_flops", "wasted_draft_tokens", "judge_share", "pareto"]


def write_outputs(records: list[EvalRecord], out_dir: str | Path, draft: str, target: str) -> list[Point]:
    out = Path(out_dir)
    points = summarize(records)
    heads = headline(points)
    (out / "summary.json").write_text(json.dumps({
        "draft": draft, "target": target, "points": [p.model_dump() for p in points], "headline": heads,
        "note": TINY_NOTE.format(draft=draft, target=target)}, indent=2))
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for p in points:
            d = p.model_dump()
            w.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    from eval.plot import plot_curve

    plot_curve(points, out / "curve.png", title=f"{records[0].dataset if records else ''}: {draft} -> {target}")
    (out / "report.md").write_text(render_report(points, heads, draft, target, records))
    return points


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def render_report(points: list[Point], heads: dict, draft: str, target: str, records: list[EvalRecord]) -> str:
    n = max((p.n for p in points), default=0)
    dataset = records[0].dataset if records else "?"
    lines = [f"# specstep eval: {dataset}", "",
             f"{n} problems per configuration. " + TINY_NOTE.format(draft=draft, target=target), "",
             "![accuracy versus latency](curve.png)", "",
             "| config | n | accuracy (95% CI) | mean s | p90 s | GFLOPs | target-token share | escalation rate "
             "| wasted | no answer | Pareto |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        lines.append(f"| {p.config} | {p.n} | {100 * p.accuracy:.1f}% ({100 * p.ci_low:.0f}-{100 * p.ci_high:.0f}) | "
                     f"{p.mean_latency:.2f} | {p.p90_latency:.2f} | {p.mean_flops / 1e9:.1f} | "
                     f"{100 * p.target_token_share:.0f}% | "
                     f"{100 * p.escalation_rate:.0f}% | {p.wasted_escalations} | {p.format_failures} | "
                     f"{'yes' if p.pareto else ''} |")
    lines += ["", "## Headline numbers", "",
              "Speedup: target-only's mean latency over the latency at which the policy's curve (interpolated "
              "between its thresholds) first reaches target-only's accuracy. Area score: area under the "
              "accuracy gap recovered, (acc - draft-only) / (target-only - draft-only), against the escalation "
              "rate, from draft-only (0) to target-only (1), as RouteLLM's APGR.", "",
              "| policy | speedup at target-only accuracy (wall) | (FLOPs) | area score |", "| --- | --- | --- | --- |"]
    for policy, row in heads.items():
        sp, fl = row["speedup_at_target_accuracy"], row["flops_speedup_at_target_accuracy"]
        lines.append(f"| {policy} | {'not reached' if sp is None else f'{sp:.2f}x'} | "
                     f"{'not reached' if fl is None else f'{fl:.2f}x'} | {_fmt(row['area_score'])} |")
    if not heads:
        lines.append("| (no policies besides the references) | | | |")
    if len(heads) > 1:
        names = list(heads)
        lines += ["", "Policy against policy: the row's speedup over the column at the highest accuracy both reach "
                  "(wall / FLOPs).", "", "| policy | " + " | ".join(names) + " |",
                  "| --- |" + " --- |" * len(names)]
        for a in names:
            cells = []
            for b in names:
                v = heads[a]["versus"].get(b)
                cells.append("" if v is None else f"{_x(v['wall'])} / {_x(v['flops'])} @ {100 * v['accuracy']:.0f}%")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    draft, target = _ref(points, "draft-only"), _ref(points, "target-only")
    if draft is not None and target is not None and target.accuracy <= draft.accuracy:
        lines += ["", f"Speedups over target-only and area scores are n/a: target-only ({100 * target.accuracy:.1f}%) "
                  f"is not more accurate than draft-only ({100 * draft.accuracy:.1f}%) here, so there is no gap to "
                  "recover and no accuracy worth matching."]
    return "\n".join(lines) + "\n"
