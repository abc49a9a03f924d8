"""curve.png: accuracy against mean latency, modeled seconds (where the points have them), estimated FLOPs
and target-token share, one panel each."""

from __future__ import annotations

from pathlib import Path

from eval.summary import Point

REFS = {"draft-only": ("s", "tab:blue"), "target-only": ("D", "tab:red")}


def plot_curve(points: list[Point], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mean_latency", "mean latency per problem (s)"), ("mean_flops", "estimated FLOPs per problem"),
              ("target_token_share", "target-token share")]
    if points and all(p.mean_modeled is not None for p in points):
        panels.insert(1, ("mean_modeled", "modeled seconds per problem (latency profile)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.7 * len(panels), 4.8))
    for ax, (xkey, xlabel) in zip(axes, panels):
        for policy in sorted({p.policy for p in points}):
            pts = sorted((p for p in points if p.policy == policy), key=lambda p: getattr(p, xkey))
            xs = [getattr(p, xkey) for p in pts]
            ys = [p.accuracy for p in pts]
            err = [[p.accuracy - p.ci_low for p in pts], [p.ci_high - p.accuracy for p in pts]]
            if policy in REFS:
                marker, color = REFS[policy]
                ax.errorbar(xs, ys, yerr=err, fmt=marker, color=color, markersize=9, capsize=3, label=policy, zorder=3)
            else:
                ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=2, label=policy, alpha=0.9)
                for p, x, y in zip(pts, xs, ys):
                    if p.threshold is not None or p.escalation_rate_goal is not None:
                        tag = p.threshold if p.escalation_rate_goal is None else f"r{p.escalation_rate_goal:g}"
                        ax.annotate(f"{tag:g}" if isinstance(tag, float) else tag, (x, y), fontsize=7,
                                    xytext=(3, 3), textcoords="offset points")
        if xkey == "mean_latency":
            front = sorted((p for p in points if p.pareto), key=lambda p: p.mean_latency)
            if front:
                ax.step([p.mean_latency for p in front], [p.accuracy for p in front], where="post", color="black",
                        linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
                ax.scatter([p.mean_latency for p in front], [p.accuracy for p in front], s=120, facecolors="none",
                           edgecolors="black", zorder=4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title + "  (error bars: 95% Wilson interval)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
