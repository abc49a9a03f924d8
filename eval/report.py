"""Write summary.json, summary.csv, curve.png and report.md for a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eval.latency import LatencyProfile
from eval.records import EvalRecord, config_key
from eval.stats import Estimate, Paired, Resampler, area, cost_at_accuracy, mcnemar, paired
from eval.summary import Point, summarize

TINY_NOTE = ("Models: {draft} (draft) and {target} (target). If these are the bundled tiny models, the numbers "
             "measure the machinery, not the method: the models are weak at math.")


METRICS = {"wall": "mean_latency", "flops": "mean_flops", "modeled": "mean_modeled"}  # cost -> Point field
N_BOOT = 2000
RANDOM_AREA = 0.5  # the area score of routing at random: accuracy linear in the escalation rate


def _ref(points: list[Point], policy: str) -> Point | None:
    return next((p for p in points if p.policy == policy), None)


def paired_data(records: list[EvalRecord]) -> Paired:
    """Each configuration's per-problem outcome and costs, paired by problem (repeats averaged); modeled
    seconds where every record has them."""
    modeled = all(r.modeled_seconds is not None for r in records)
    rows = []
    for r in records:
        vals = {"correct": float(r.correct), "wall": r.wall_seconds, "flops": r.costs.flops,
                "escalation": r.escalation_rate}
        if modeled:
            vals["modeled"] = r.modeled_seconds
        rows.append((config_key(r.policy, r.threshold, r.escalation_rate_goal), r.problem_id, vals))
    return paired(rows)


def _est(e: Estimate, null: float) -> dict:
    return {"value": e.value, "low": e.low, "high": e.high, "missing": e.missing,
            "significant": e.value is not None and e.excludes(null)}


def headline(points: list[Point], data: Paired, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict]:
    """Per policy, each with a paired-bootstrap 95% interval over problems (the whole pipeline: means,
    curve, interpolation, ratio): the speedup over target-only at target-only's accuracy per cost (only
    where target-only is more accurate than draft-only: otherwise there is nothing to match), the area
    score, and the speedup over every other policy at the highest accuracy both reach (`versus`). Also
    sets each point's paired comparison with target-only (difference, interval, McNemar)."""
    draft, target = _ref(points, "draft-only"), _ref(points, "target-only")
    gap = draft is not None and target is not None and target.accuracy > draft.accuracy
    metrics = [m for m in METRICS if m in data.values]
    policies = sorted({p.policy for p in points} - {"draft-only", "target-only"})
    rows = {q: [data.row(p.config) for p in points if p.policy == q] for q in policies}
    t = data.row(target.config) if target is not None else None
    d = data.row(draft.config) if draft is not None else None

    draws = Resampler(data, n_boot, seed)

    def boot(stat, fill: float | None = 0.0) -> Estimate:
        return draws.estimate(stat, fill)

    def speedup(idx: list[int], metric: str):
        def stat(m: dict) -> float | None:
            c = cost_at_accuracy(m[metric][idx], m["correct"][idx], m["correct"][t])
            return None if c is None or c <= 0 else float(m[metric][t] / c)
        return stat

    def versus(a: list[int], b: list[int], metric: str):
        def stat(m: dict) -> float | None:
            goal = min(m["correct"][a].max(), m["correct"][b].max())
            ca = cost_at_accuracy(m[metric][a], m["correct"][a], goal)
            cb = cost_at_accuracy(m[metric][b], m["correct"][b], goal)
            return float(cb / ca) if ca and cb else None
        return stat

    def area_of(idx: list[int]):
        def stat(m: dict) -> float | None:
            return area(m["escalation"][idx], m["correct"][idx], m["correct"][d], m["correct"][t])
        return stat

    if t is not None:
        for p in points:
            if p.config == target.config:
                continue
            i = data.row(p.config)
            diff = boot(lambda m, i=i: float(m["correct"][i] - m["correct"][t]))
            test = mcnemar(data.values["correct"][i], data.values["correct"][t])
            p.diff_vs_target, p.diff_low, p.diff_high = diff.value, diff.low, diff.high
            p.mcnemar_p = test.p_value
            p.noninferior_within = None if diff.low is None else max(0.0, -diff.low)
            # how much cheaper than target-only this configuration is, whatever its accuracy
            p.cost_vs_target = {mt: _est(boot(lambda m, i=i, mt=mt: float(m[mt][t] / m[mt][i]) if m[mt][i] > 0
                                              else None, fill=None), 1.0) for mt in metrics}
    out: dict[str, dict] = {}
    for policy in policies:
        idx = rows[policy]
        row: dict = {"speedup": {m: None for m in metrics}, "area_score": None, "versus": {}}
        if gap:
            row["speedup"] = {m: _est(boot(speedup(idx, m)), 1.0) for m in metrics}
        if draft is not None and target is not None:
            a = boot(area_of(idx), fill=None)  # draws without a gap to recover have no area: left out
            row["area_score"] = None if a.value is None else _est(a, RANDOM_AREA)
        for other in policies:
            if other != policy:
                goal = min(max(p.accuracy for p in points if p.policy == q) for q in (policy, other))
                row["versus"][other] = {"accuracy": goal} | {
                    m: _est(boot(versus(idx, rows[other], m)), 1.0) for m in metrics}
        out[policy] = row
    return out


COLUMNS = ["config", "policy", "threshold", "escalation_rate_goal", "n", "correct", "accuracy", "ci_low", "ci_high",
           "diff_vs_target", "diff_low", "diff_high", "mcnemar_p", "noninferior_within",
           "mean_latency", "p90_latency", "mean_modeled", "target_token_share", "escalation_rate", "wasted_escalations",
           "format_failures", "mean_flops", "wasted_draft_tokens", "wasted_draft_input", "judge_share", "pareto"]
PROFILE_FILE = "latency_profile.json"


def write_outputs(records: list[EvalRecord], out_dir: str | Path, draft: str, target: str,
                  profile: LatencyProfile | None = None, n_boot: int = N_BOOT, seed: int = 0,
                  select_margin: float = 0.0) -> list[Point]:
    """summary.json, summary.csv, curve.png and report.md of the test records; selection.json where some
    records are validation records (thresholds chosen on them); and, where no profile is given, the latency
    profile fitted on all the records (latency_profile.json). Returns the test points."""
    from eval.latency import machine_name, with_modeled_seconds, write_profile

    out = Path(out_dir)
    records, profiles = with_modeled_seconds(records, profile, machine_name())
    main = next((p for p in profiles if (p.draft, p.target) == (draft, target)), profiles[0] if profiles else None)
    if profile is None and main is not None:
        write_profile(main, out / PROFILE_FILE)
    val = [r for r in records if r.split == "val"]
    records = [r for r in records if r.split == "test"]
    choices = None
    if val:
        from eval.select import choose

        val_points = summarize(val)
        choices = {"problems": len({r.problem_id for r in val}), "margin": select_margin,
                   "points": [p.model_dump() for p in val_points],
                   "chosen": {k: c.model_dump() for k, c in choose(val_points, select_margin).items()}}
        (out / "selection.json").write_text(json.dumps(choices, indent=2))
    points = summarize(records)
    heads = headline(points, paired_data(records), n_boot=n_boot, seed=seed)
    (out / "summary.json").write_text(json.dumps({
        "draft": draft, "target": target, "points": [p.model_dump() for p in points], "headline": heads,
        "latency_profiles": [p.model_dump() for p in profiles], "selection": choices,
        "note": TINY_NOTE.format(draft=draft, target=target)}, indent=2))
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for p in points:
            d = p.model_dump()
            w.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    from eval.plot import plot_curve

    plot_curve(points, out / "curve.png", title=f"{records[0].dataset if records else ''}: {draft} -> {target}")
    (out / "report.md").write_text(render_report(points, heads, draft, target, records, profiles, choices))
    return points


def _estimate(e: dict | None, unit: str = "x", absent: str = "not reached") -> str:
    """A value with its interval, "not significant" where the interval includes the null value."""
    if e is None or e["value"] is None:
        return absent
    text = f"{e['value']:.2f}{unit} ({e['low']:.2f}-{e['high']:.2f})"
    return text if e["significant"] else text + " not significant"


def _ratio(e: dict | None) -> str:
    """A speedup with its interval, and how often a resample did not reach the accuracy asked for."""
    text = _estimate(e)
    if e is None or e["value"] is None or e["missing"] < 0.005:
        return text
    return text + f"; not reached in {100 * e['missing']:.0f}% of resamples"


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _diff(p: Point) -> str:
    if p.diff_vs_target is None:
        return ""
    text = f"{100 * p.diff_vs_target:+.1f} ({100 * p.diff_low:+.0f} to {100 * p.diff_high:+.0f}), p={p.mcnemar_p:.2g}"
    return text if p.diff_low > 0 or p.diff_high < 0 else text + ", not significant"


def render_report(points: list[Point], heads: dict, draft: str, target: str, records: list[EvalRecord],
                  profiles: list[LatencyProfile] = (), choices: dict | None = None) -> str:
    n = max((p.n for p in points), default=0)
    dataset = records[0].dataset if records else "?"
    modeled = bool(points) and all(p.mean_modeled is not None for p in points)
    lines = [f"# specstep eval: {dataset}", "",
             f"{n} problems per configuration. " + TINY_NOTE.format(draft=draft, target=target), "",
             "![accuracy versus latency](curve.png)", "",
             "Intervals are 95%: Wilson for an accuracy; for everything compared with another configuration, a "
             "paired bootstrap over problems (every configuration ran the same problems). Against target-only: "
             "accuracy difference in points (interval) and the exact McNemar test's p-value.", "",
             "| config | n | accuracy (95% CI) | vs target-only, points | cost of target-only over this ("
             + ("modeled" if modeled else "FLOPs") + ") | mean s | p90 s | "
             + ("modeled s | " if modeled else "") + "GFLOPs | target-token share | escalation rate "
             "| wasted | no answer | Pareto |",
             "| --- | --- | --- | --- | --- | --- | --- | " + ("--- | " if modeled else "")
             + "--- | --- | --- | --- | --- | --- |"]
    cost_key = "modeled" if modeled else "flops"
    side = max((r.concurrency for r in records), default=1)
    if side > 1:
        lines[6:6] = [f"Problems were solved up to {side} side by side (`--concurrency`), their decoding batched: "
                      "a solve's wall seconds (mean s, p90 s, the wall speedups) include the other solves' work; "
                      "modeled seconds and FLOPs are each solve's own.", ""]
    for p in points:
        lines.append(f"| {p.config} | {p.n} | {100 * p.accuracy:.1f}% ({100 * p.ci_low:.0f}-{100 * p.ci_high:.0f}) | "
                     f"{_diff(p)} | {_estimate(p.cost_vs_target.get(cost_key), absent='')} | {p.mean_latency:.2f} | "
                     f"{p.p90_latency:.2f} | "
                     + (f"{p.mean_modeled:.2f} | " if modeled else "") + f"{p.mean_flops / 1e9:.1f} | "
                     f"{100 * p.target_token_share:.0f}% | "
                     f"{100 * p.escalation_rate:.0f}% | {p.wasted_escalations} | {p.format_failures} | "
                     f"{'yes' if p.pareto else ''} |")
    within = [p for p in points if p.policy != "target-only" and p.noninferior_within is not None]
    if within:
        lines += ["", "Non-inferiority: each configuration is within d points of target-only's accuracy at 95% "
                  "(d: the low end of the paired interval of the difference): "
                  + "; ".join(f"{p.config} d={100 * p.noninferior_within:.0f}" for p in within) + "."]
    metrics = [m for m in METRICS if m != "modeled" or modeled]
    names = {"wall": "wall", "flops": "FLOPs", "modeled": "modeled"}
    lines += ["", "## Headline numbers", "",
              "Speedup: target-only's mean cost over the cost at which the policy's curve (interpolated between its "
              "thresholds) first reaches target-only's accuracy, per cost (wall seconds, estimated FLOPs"
              + (", modeled seconds from the latency profile" if modeled else "") + "). Area score: area under the "
              "accuracy gap recovered, (acc - draft-only) / (target-only - draft-only), against the escalation "
              "rate, from draft-only (0) to target-only (1), as RouteLLM's APGR. Each with its paired-bootstrap 95% "
              "interval; \"not significant\" where the interval includes 1 (speedups) or 0.5 (an area score: "
              "what routing at random gets, accuracy rising linearly with the escalation rate).", "",
              "| policy | " + " | ".join(f"speedup at target-only accuracy ({names[m]})" for m in metrics)
              + " | area score |", "| --- |" + " --- |" * (len(metrics) + 1)]
    for policy, row in heads.items():
        lines.append(f"| {policy} | " + " | ".join(_ratio(row["speedup"].get(m)) for m in metrics)
                     + f" | {_estimate(row['area_score'], unit='', absent='n/a')} |")
    if not heads:
        lines.append("| (no policies besides the references) |" + " |" * (len(metrics) + 1))
    if len(heads) > 1:
        main = "modeled" if modeled else "flops"
        names_ = list(heads)
        lines += ["", f"Policy against policy: the row's speedup over the column at the highest accuracy both reach "
                  f"({names[main]}, 95% interval).", "", "| policy | " + " | ".join(names_) + " |",
                  "| --- |" + " --- |" * len(names_)]
        for a in names_:
            cells = []
            for b in names_:
                v = heads[a]["versus"].get(b)
                cells.append("" if v is None else f"{_ratio(v[main])} @ {100 * v['accuracy']:.0f}%")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    draft_p, target_p = _ref(points, "draft-only"), _ref(points, "target-only")
    if draft_p is not None and target_p is not None and target_p.accuracy <= draft_p.accuracy:
        lines += ["", "Speedups over target-only and area scores are n/a: target-only "
                  f"({100 * target_p.accuracy:.1f}%) is not more accurate than draft-only "
                  f"({100 * draft_p.accuracy:.1f}%) here, so there is no gap to recover and no accuracy "
                  "worth matching."]
    if choices is not None:
        lines += ["", "## Chosen on validation problems", "",
                  f"Thresholds were chosen on {choices['problems']} validation problems, none of them among the "
                  "problems above: per policy the cheapest configuration (modeled seconds) reaching target-only's "
                  f"validation accuracy minus {100 * choices['margin']:.0f} points, else the most accurate.", "",
                  "| policy | chosen | of | validation accuracy | modeled s | reached target-only |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in choices["chosen"].values():
            lines.append(f"| {c['policy']} | {c['config']} | {c['candidates']} | {100 * c['accuracy']:.1f}% | "
                         f"{c['cost']:.2f} | {'yes' if c['reached'] else 'no'} |")
    for profile in profiles:
        lines += ["", f"## Latency model: {profile.draft} -> {profile.target}", "",
                  f"Modeled seconds per stage = overhead x calls + prefill x tokens read + decode x tokens written "
                  f"({profile.machine or 'machine not stated'}); per solution, modeled stage seconds differ from "
                  f"the measured by {_fmt(profile.record_error, pct=True)} on average on the run it was fitted on.", "",
                  "| stage | model | overhead ms/call | prefill ms/token | decode ms/token | rows | R^2 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s, f in profile.stages.items():
            lines.append(f"| {s} | {f.model} | {1e3 * f.overhead:.2f} | {1e3 * f.prefill:.3f} | {1e3 * f.decode:.2f} | "
                         f"{f.rows} | {_fmt(f.r2)} |")
    return "\n".join(lines) + "\n"
