"""Run routing policies over a benchmark: every (policy, threshold) on the same problems, one
record per (problem, policy, threshold, repeat), appended durably and resumable after a crash.

Configurations run interleaved: for each problem (and repeat), every configuration in a seeded random
order, so that the machine's drift hits all of them alike. With `select_limit`, thresholds are chosen
on validation problems first (eval.select) and only the chosen ones run on the test problems.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random
import threading
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
    repeats: int = Field(1, ge=1)  # runs per test problem and configuration; repeat k > 0 samples with seed + k
    select_limit: int | None = Field(None, ge=1)  # validation problems on which thresholds are chosen
    select_margin: float = Field(0.0, ge=0.0, le=1.0)  # accuracy below target-only's a choice may give up
    latency_profile: str | None = None  # a profile file (eval.latency); else one is fitted on the run's records
    # solves side by side (engines that batch decode them together); their wall seconds then include the
    # batch's other work, so modeled latency comes from `latency_profile`, fitted on solves one at a time
    concurrency: int = Field(1, ge=1)

    def identity(self) -> dict[str, Any]:
        """What must match to resume into the same output folder (policies and repeats may be added)."""
        out = self.model_dump(include={"dataset", "data_dir", "limit", "seed", "synthetic_steps", "synthetic_split",
                                       "draft", "target", "limits"})
        if self.select_limit is not None:  # only when set, so that folders of earlier versions still resume
            out |= {"select_limit": self.select_limit, "select_margin": self.select_margin}
        return out


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
            rate: float | None, sol: Solution, split: str = "test", repeat: int = 0) -> EvalRecord:
    g = problem.grade(sol.answer_text)
    steps = [s for s in sol.steps if s.kind != "forced_answer"]
    tokens = sum(s.tokens for s in steps)
    by_target = [s for s in steps if s.author == "target"]
    escalated = sol.escalation_rate()
    return EvalRecord(
        key=key, dataset=cfg.dataset, problem_id=problem.id, policy=policy, threshold=threshold,
        escalation_rate_goal=rate, gold=problem.gold or "", answer=sol.answer, extracted=g.extracted,
        rule=g.rule, grade_method=g.method, correct=g.correct, stop_reason=sol.stop_reason,
        wall_seconds=sol.wall_seconds, concurrency=cfg.concurrency, costs=sol.costs, steps=len(steps),
        target_steps=len(by_target),
        escalation_rate=0.0 if escalated is None else escalated,
        wasted_escalations=sum(1 for s in steps if s.wasted_escalation),
        target_token_share=sum(s.tokens * s.target_share for s in by_target) / tokens if tokens else 0.0,
        split=split, repeat=repeat, solution=sol,
    )


def _held_out(problem: Problem) -> bool:
    """Whether a problem of a dataset without splits belongs to the validation part (a fifth, by a hash of
    its question: the same problems whatever the file order or the limit)."""
    return hashlib.sha256(problem.question.encode()).digest()[0] % 5 == 0


def problem_sets(cfg: SweepConfig) -> tuple[list[Problem], list[Problem]]:
    """(validation problems, test problems). Validation problems exist only with `select_limit`: the
    synthetic set's val split, or a fifth of another dataset's problems (the test problems are then the
    rest). A selection split without problems raises ConfigError."""
    from eval.datasets import load_dataset

    if cfg.dataset == "synthetic":
        test = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                            steps=cfg.synthetic_steps, split=cfg.synthetic_split)
        if cfg.select_limit is None:
            return [], test
        if cfg.synthetic_split == "val":
            raise ConfigError("--select-limit chooses on the val split, so the problems reported must come from "
                              "another split: use --split test")
        return load_dataset(cfg.dataset, limit=cfg.select_limit, seed=cfg.seed, steps=cfg.synthetic_steps,
                            split="val"), test
    if cfg.select_limit is None:
        return [], load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit)
    every = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    val = [p for p in every if _held_out(p)][: cfg.select_limit]
    test = [p for p in every if not _held_out(p)][: cfg.limit]
    if not val:
        raise ConfigError(f"dataset {cfg.dataset!r} has no validation problems to choose thresholds on")
    if not test:
        raise ConfigError(f"dataset {cfg.dataset!r} has no test problems left beside its validation problems")
    return val, test


def record_key(problem: Problem, run: tuple[str, float | None, float | None], repeat: int) -> str:
    key = f"{problem.id}|{config_key(*run)}"
    return key if repeat == 0 else f"{key}#{repeat}"


def interleaved(cfg: SweepConfig, runs: list, problems: list[Problem], repeats: int) -> list[tuple[Any, Problem, int]]:
    """(run, problem, repeat) for every run, problem by problem and repeat by repeat, the runs of each in a
    random order seeded by the sweep's seed, the problem and the repeat (the same order on every resume)."""
    out = []
    for problem in problems:
        for k in range(repeats):
            order = list(runs)
            random.Random(f"{cfg.seed}|{problem.id}|{k}").shuffle(order)
            out += [(run, problem, k) for run in order]
    return out


def run_sweep(cfg: SweepConfig, out_dir: str | Path, progress: bool = True) -> list[EvalRecord]:
    """Run (or resume) a sweep into out_dir/records.jsonl and return every record of this config: with
    `select_limit`, the validation records (split "val") of every run, then the test records of the runs
    chosen on them (eval.select) and of the references."""
    from eval.select import choose_runs

    out = Path(out_dir)
    runs = plan(cfg)
    profile = None
    if cfg.latency_profile:  # a bad profile fails before any model loads
        from eval.latency import read_profile

        profile = read_profile(cfg.latency_profile)
        profile.check_pair(cfg.draft, cfg.target, cfg.latency_profile)
    if cfg.concurrency > 1 and profile is None:
        raise ConfigError(f"--concurrency {cfg.concurrency} solves problems side by side, so their seconds "
                          "measure the batch: give --latency-profile (fitted on solves one at a time) for the "
                          "modeled latency")
    val, test = problem_sets(cfg)
    ids = [p.id for p in [*val, *test]]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"dataset {cfg.dataset!r} has duplicate problem ids; records could not be told apart")
    if cfg.select_limit is not None and "target-only" not in cfg.policies:
        raise ConfigError("--select-limit chooses thresholds against target-only's accuracy: add target-only to "
                          "--policies")
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    jsonl.check_identity(run_file, cfg.identity(),
                         differs=f"{out} holds results of a different run (dataset, models, limits or seed differ): "
                                 "use a new --out folder",
                         unreadable=f"{run_file} is not a run file: use a new --out folder")
    jsonl.write_identity(run_file, cfg.identity(), config=cfg.model_dump())

    records_path = out / "records.jsonl"
    done = {r.key: r for r in read_records(records_path)}
    solvers: dict[str, Any] = {}
    with RecordWriter(records_path) as writer:
        kept = []
        if val:
            # validation problems run once: they choose thresholds; repeats are for what is reported
            kept += _run(cfg, interleaved(cfg, runs, val, 1), "val", done, writer, solvers, progress)
            chosen = choose_runs(cfg, runs, kept, profile)
            log.info("chosen on %d validation problems: %s", len(val), ", ".join(config_key(*r) for r in chosen))
            runs = chosen
        kept += _run(cfg, interleaved(cfg, runs, test, cfg.repeats), "test", done, writer, solvers, progress)
    return kept


def _run(cfg: SweepConfig, work: list, split: str, done: dict[str, EvalRecord], writer: RecordWriter,
         solvers: dict[str, Any], progress: bool) -> list[EvalRecord]:
    """Solve what `done` lacks of `work`, appending each record; return the records of `work`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reasoning.api import Solver

    todo = [(run, p, k) for run, p, k in work if record_key(p, run, k) not in done]
    log.info("%s: %d runs; %d done, %d to do", split, len(work), len(work) - len(todo), len(todo))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("acc {task.fields[acc]}"), disable=not progress, transient=False)
    with bar:
        task = bar.add_task(f"eval {cfg.dataset} ({split})", total=len(todo), acc="-")
        lock = threading.Lock()  # solvers, the writer and the bar, shared by the solves side by side
        tally = [0, 0]

        def one(item: tuple[Any, Problem, int]) -> None:
            (policy, threshold, rate), problem, k = item
            ck = config_key(policy, threshold, rate)
            with lock:
                if ck not in solvers:
                    solvers[ck] = _verdict(cfg) if policy == VERDICT_POLICY else Solver(
                        cfg.draft, cfg.target, policy, threshold,
                        router_options=_options_for(policy, cfg.router_options, rate), **cfg.limits)
                bar.update(task, description=f"{ck:>22s}")
            if k == 0 or policy == VERDICT_POLICY:
                sol = solvers[ck].solve(problem)
            else:
                sol = solvers[ck].solve(problem, seed=(cfg.limits.get("seed") or 0) + k)
            rec = _record(cfg, record_key(problem, (policy, threshold, rate), k), problem, policy, threshold, rate,
                          sol, split, k)
            with lock:
                writer.write(rec)
                done[rec.key] = rec
                tally[0], tally[1] = tally[0] + rec.correct, tally[1] + 1
                bar.update(task, advance=1, acc=f"{tally[0]}/{tally[1]}")

        from reasoning.batching import for_each

        for_each(one, todo, cfg.concurrency)
    return [done[record_key(p, run, k)] for run, p, k in work]
