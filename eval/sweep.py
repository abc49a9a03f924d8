"""Run routing policies over a benchmark: every (policy, threshold) on the same problems, one
record per (problem, policy, threshold), appended durably and resumable after a crash."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eval.records import EvalRecord, RecordWriter, config_key, read_records
from reasoning import jsonl
from reasoning.errors import ConfigError
from reasoning.options import DEFAULT_DRAFT, DEFAULT_TARGET
from reasoning.registry import option_value
from reasoning.types import Problem, Solution

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # the folder's identity: a resumed run must match it
RATE_POLICIES = {"random", "arbitrage"}  # policies that can be set by a target escalation rate
# Speculative Verdict in text-only mode: `verdict_samples` samples of the draft are the experts, the
# target is the verdict model (router options verdict_samples, verdict_m, verdict_skip; defaults 5, 3 and
# false: the verdict is called even when the selected experts agree, as in the paper).
VERDICT_POLICY = "verdict"
# router option -> (Verdict's argument, its type, the default)
VERDICT_OPTIONS: dict[str, tuple[str, type, Any]] = {
    "verdict_samples": ("samples", int, 5), "verdict_m": ("m", int, 3),
    "verdict_skip": ("skip_on_agreement", bool, False),
}


def _verdict_options(options: dict[str, Any]) -> dict[str, Any]:
    """Verdict's arguments from the verdict_* router options; a bad value raises ConfigError."""
    out = {arg: option_value(options.get(name, default), hint, f"router option {name}")
           for name, (arg, hint, default) in VERDICT_OPTIONS.items()}
    if out["samples"] < 2:
        raise ConfigError(f"router option verdict_samples must be at least 2, got {out['samples']}")
    if not 1 <= out["m"] <= out["samples"]:
        raise ConfigError(f"router option verdict_m must be between 1 and verdict_samples ({out['samples']}), "
                          f"got {out['m']}")
    return out


def _verdict(cfg: SweepConfig):
    from reasoning.verdict import Verdict

    # the sweep's few_shot and max_tokens when given, else Verdict's own defaults
    kw = {k: int(cfg.limits[k]) for k in ("few_shot", "max_tokens") if cfg.limits.get(k) is not None}
    return Verdict([cfg.draft], cfg.target, seed=cfg.seed, **_verdict_options(cfg.router_options), **kw)


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    data_dir: str | None = None
    limit: int | None = Field(None, ge=1)
    seed: int = 0
    synthetic_steps: int = Field(2, ge=1, le=8)
    synthetic_split: Literal["train", "val", "test"] = "test"
    draft: str = DEFAULT_DRAFT
    target: str = DEFAULT_TARGET
    policies: list[str]
    thresholds: list[float] = Field(default_factory=list)
    escalation_rates: list[float] = Field(default_factory=list)
    router_options: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must match to resume into the same output folder (policies may be added)."""
        return self.model_dump(include={"dataset", "data_dir", "limit", "seed", "synthetic_steps", "synthetic_split",
                                        "draft", "target", "limits"})


def plan(cfg: SweepConfig) -> list[tuple[str, float | None, float | None]]:
    """(policy, threshold, escalation-rate goal) for every run; validates each against its router."""
    from routers import ROUTERS, make_router

    if not cfg.policies:
        raise ConfigError("no policies given: --policies takes a comma-separated list such as draft-only,target-only")
    runs: list[tuple[str, float | None, float | None]] = []
    for p in cfg.policies:
        if p == VERDICT_POLICY:
            _verdict_options(cfg.router_options)
            runs.append((p, None, None))
            continue
        cls = ROUTERS.get(p)
        if cls is None:
            raise ConfigError(f"unknown policy {p!r}: choose from {', '.join(sorted([*ROUTERS, VERDICT_POLICY]))}")
        if cls.threshold_range is None:
            runs.append((p, None, None))
            continue
        thresholds = cfg.thresholds or ([] if cfg.escalation_rates and p in RATE_POLICIES else [None])
        for t in thresholds:
            runs.append((p, t, None))
        for r in cfg.escalation_rates:
            if p not in RATE_POLICIES:
                continue
            if not 0.0 <= r <= 1.0:
                raise ConfigError(f"escalation rate {r} is out of range: use a number between 0 and 1")
            runs.append((p, r if p == "random" else None, r))
    for p, t, r in runs:  # fail on a bad threshold, rate or option before any model runs
        if p != VERDICT_POLICY:
            make_router(p, t, **_options_for(p, cfg.router_options, r))
    return runs


def _options_for(policy: str, options: dict[str, Any], rate: float | None) -> dict[str, Any]:
    from routers import ROUTERS

    accepted = inspect.signature(ROUTERS[policy].__init__).parameters
    out = {k: v for k, v in options.items() if k in accepted}
    if rate is not None and policy == "arbitrage":
        out["escalation_rate"] = rate
    return out


def _record(cfg: SweepConfig, key: str, problem: Problem, policy: str, threshold: float | None,
            rate: float | None, sol: Solution) -> EvalRecord:
    from reasoning.grading import grade

    fmt = problem.meta.get("answer_format")
    g = grade(sol.answer_text, problem.gold or "", fmt if isinstance(fmt, str) else None)
    steps = [s for s in sol.steps if s.kind != "forced_answer"]
    tokens = sum(s.tokens for s in steps)
    by_target = [s for s in steps if s.author == "target"]
    escalated = sol.escalation_rate()
    return EvalRecord(
        key=key, dataset=cfg.dataset, problem_id=problem.id, policy=policy, threshold=threshold,
        escalation_rate_goal=rate, gold=problem.gold or "", answer=sol.answer, extracted=g.extracted,
        rule=g.rule, grade_method=g.method, correct=g.correct, stop_reason=sol.stop_reason,
        wall_seconds=sol.wall_seconds, costs=sol.costs, steps=len(steps), target_steps=len(by_target),
        escalation_rate=0.0 if escalated is None else escalated,
        wasted_escalations=sum(1 for s in steps if s.wasted_escalation),
        target_token_share=sum(s.tokens for s in by_target) / tokens if tokens else 0.0,
        solution=sol,
    )


def run_sweep(cfg: SweepConfig, out_dir: str | Path, progress: bool = True) -> list[EvalRecord]:
    """Run (or resume) a sweep into out_dir/records.jsonl and return every record of this config."""
    from eval.datasets import load_dataset
    from reasoning.api import Solver

    out = Path(out_dir)
    runs = plan(cfg)
    if cfg.dataset == "synthetic":
        problems = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                                steps=cfg.synthetic_steps, split=cfg.synthetic_split)
    else:
        problems = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"dataset {cfg.dataset!r} has duplicate problem ids; records could not be told apart")
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    jsonl.check_identity(run_file, cfg.identity(),
                         differs=f"{out} holds results of a different run (dataset, models, limits or seed differ): "
                                 "use a new --out folder",
                         unreadable=f"{run_file} is not a run file: use a new --out folder")
    jsonl.write_identity(run_file, cfg.identity(), config=cfg.model_dump())

    records_path = out / "records.jsonl"
    existing = read_records(records_path)
    done = {r.key: r for r in existing}
    todo = [(run, p) for run in runs for p in problems if f"{p.id}|{config_key(*run)}" not in done]
    log.info("%d runs x %d problems; %d done, %d to do", len(runs), len(problems), len(problems) * len(runs)
             - len(todo), len(todo))

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("acc {task.fields[acc]}"), disable=not progress, transient=False)
    solvers: dict[str, Solver] = {}
    with RecordWriter(records_path) as writer, bar:
        task = bar.add_task(f"eval {cfg.dataset}", total=len(todo), acc="-")
        right = total = 0
        for (policy, threshold, rate), problem in todo:
            ck = config_key(policy, threshold, rate)
            if ck not in solvers:
                solvers[ck] = _verdict(cfg) if policy == VERDICT_POLICY else Solver(
                    cfg.draft, cfg.target, policy, threshold,
                    router_options=_options_for(policy, cfg.router_options, rate), **cfg.limits)
            bar.update(task, description=f"{ck:>22s}")
            sol = solvers[ck].solve(problem)
            rec = _record(cfg, f"{problem.id}|{ck}", problem, policy, threshold, rate, sol)
            writer.write(rec)
            done[rec.key] = rec
            right, total = right + rec.correct, total + 1
            bar.update(task, advance=1, acc=f"{right}/{total}")
    keys = {f"{p.id}|{config_key(*run)}" for run in runs for p in problems}
    return [r for k, r in done.items() if k in keys]
