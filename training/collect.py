"""Collecting router training data (`specstep collect`): one `TraceRecord` per routing step.

Every problem is solved by a behaviour policy, the oracle with tau = 0 (as in the Arbitrage paper):
at each step the draft writes its step (the controller does that), the target writes K steps from
the same prefix, the judge scores the draft's step and each target step, and

    target_score = mean of the K target scores,  advantage = target_score - draft_score,
    label = advantage > 0,

and the solution goes on with the target's first step when label is true, the draft's otherwise.
The features are `routers.features.features_from_context(ctx)`: what exists when a router decides.

K = 1 with temperature 0 uses the controller's own greedy target step; otherwise the K steps are
sampled at the temperature, each with its own seed (from the config seed, the problem id, the step
index and the sample index, so a rerun samples the same steps). Every model call is reported
through `ctx.report` ("target" for target steps, the judge reports its own), so the solution's
costs stay right; each record keeps the step's seconds as ``draft``, ``judge`` and ``target``.

Files in the output folder:

- ``collect.json``: the config. Resuming into a folder whose config differs is refused.
- ``traces.jsonl``: one `TraceRecord` a line. All records of a problem are written in one write
  call, flushed and fsynced, right after the problem is finished; each carries ``n_steps``.
  Forced final-answer steps are not routing decisions and have no record.
- ``done.txt``: the ids of finished problems (one JSON string a line), appended and fsynced after
  the problem's records. It exists so that a problem with no routing step (no record) is not solved
  again on every resume.

Resume: a torn last line of either file (no trailing newline and not valid) is cut off; the records
of a problem with fewer records than its ``n_steps`` (a crash in mid-write) are removed by an atomic
rewrite (temp file, fsync, ``os.replace``) that keeps every other line byte for byte. A problem is
finished when its records are complete or its id is in ``done.txt``; finished problems are skipped,
the others are solved again from the start. So a killed run, rerun with the same command, ends with
every problem's records exactly once.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from judges import Judge
from reasoning import jsonl
from reasoning.backends.base import Generation
from reasoning.errors import ConfigError
from reasoning.options import DEFAULT_DRAFT, DEFAULT_TARGET, SWEEP_LIMITS, make_limits
from reasoning.specs import parse_spec
from reasoning.types import Problem
from routers.base import Candidate, Decision, StepContext, report_written, same_step, target_better
from routers.features import FEATURE_NAMES, FEATURE_VERSION, features_from_context
from routers.oracle import OracleRouter
from training.traces import TargetSample, TraceRecord

log = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
CONFIG_FILE = "collect.json"
DONE_FILE = "done.txt"


class CollectConfig(BaseModel):
    """What to collect. Every field is part of the folder's identity (see `identity`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str
    data_dir: str | None = None
    limit: int | None = Field(None, ge=1)
    seed: int = 0  # the synthetic set's seed, and the base of the target samples' seeds
    synthetic_steps: int = Field(2, ge=1, le=8)
    synthetic_split: Literal["train", "val", "test"] = "test"
    draft: str = DEFAULT_DRAFT
    target: str = DEFAULT_TARGET
    judge: str = "specreason"
    judge_options: dict[str, Any] = Field(default_factory=dict)
    target_samples: int = Field(1, ge=1, description="K: target steps written from each prefix")
    temperature: float = Field(0.0, ge=0.0, description="of the target samples; 0 = the greedy step (K = 1)")
    max_steps: int = Field(SWEEP_LIMITS.max_steps, ge=1)
    max_tokens: int = Field(SWEEP_LIMITS.max_tokens, ge=1)
    step_tokens: int = Field(SWEEP_LIMITS.step_tokens, ge=1)
    few_shot: int | None = Field(None, ge=0, le=3)  # None: the models' default (see Solver)
    # the solves' other options (Limits fields: a preset's, a config file's, --think, ...) where not the default
    limits: dict[str, Any] = Field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must match to resume into the same folder (synthetic_steps only for the synthetic set;
        limits only where set, so that folders from before they were an option resume)."""
        exclude = set() if self.dataset.strip().lower() == "synthetic" else {"synthetic_steps", "synthetic_split"}
        if not self.limits:
            exclude.add("limits")
        return json.loads(self.model_dump_json(exclude=exclude or None))


_FLAGS = {"synthetic_steps": "--steps", "synthetic_split": "--split", "judge_options": "--judge-opt"}


def make_config(**values: Any) -> CollectConfig:
    """A `CollectConfig`, with a bad value as a one-line `ConfigError` (not a pydantic error)."""
    try:
        cfg = CollectConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "config"
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        raise ConfigError(f"bad value for {name} ({flag}): {err['msg']}") from None
    _check(cfg)
    return cfg


def _check(cfg: CollectConfig) -> None:
    if not math.isfinite(cfg.temperature) or cfg.temperature < 0:
        raise ConfigError(f"temperature must be a finite number >= 0, got {cfg.temperature}")
    if cfg.target_samples < 1:
        raise ConfigError(f"target samples must be at least 1, got {cfg.target_samples}")
    if cfg.target_samples > 1 and cfg.temperature == 0.0:
        raise ConfigError(f"{cfg.target_samples} target samples at temperature 0 would all be the same step: "
                          "give a temperature above 0 (e.g. --temperature 0.7)")


# --------------------------------------------------------------------------- the behaviour policy

@dataclass
class StepTrace:
    """What the collecting router saw at one routing step (turned into a TraceRecord later)."""

    step_index: int
    history: list[str]
    draft_text: str
    draft_tokens: int
    draft_score: float
    targets: list[TargetSample]
    target_score: float
    advantage: float
    label: bool
    features: list[float]
    seconds: dict[str, float] = field(default_factory=dict)


def sample_seed(seed: int, problem_id: str, step_index: int, k: int) -> int:
    """The seed of target sample k at one step: stable across processes and reruns. A step's samples count up
    from one base (s, s + 1, ...), as vLLM seeds the samples of one request for n, so that they are one
    request where the engine takes n (vLLM, its server, SGLang)."""
    return zlib.crc32(f"{seed}|{problem_id}|{step_index}".encode()) + k


class CollectingOracle(OracleRouter):
    """The oracle with tau = 0 that also writes K target steps per step and records every step.

    `traces` holds the steps routed since the last `reset()`. The chosen target step is the first
    sample; the target session is left at the prefix, as `Decision.step` requires."""

    def __init__(self, judge: str | Judge = "specreason", judge_options: dict[str, Any] | None = None,
                 target_samples: int = 1, temperature: float = 0.0, seed: int = 0):
        super().__init__(0.0, judge, judge_options)
        if target_samples < 1:
            raise ConfigError(f"target samples must be at least 1, got {target_samples}")
        if target_samples > 1 and temperature <= 0:
            raise ConfigError("more than one target sample needs a temperature above 0")
        self.k, self.temperature, self.seed = target_samples, float(temperature), seed
        self.traces: list[StepTrace] = []

    def reset(self) -> None:
        self.traces = []

    def _judge(self, ctx: StepContext, text: str) -> tuple[float, float]:
        """The judge's score of `text` and the seconds it reported."""
        n0 = len(ctx.reported)
        score = float(self.judge.score(ctx, text))
        return score, sum(r.usage.seconds for r in ctx.reported[n0:])

    def _target_steps(self, ctx: StepContext) -> list[Generation]:
        """The K target steps from the prefix: the controller's own greedy step (K = 1, temperature 0), else
        K samples in one batched call where the engine batches (transformers: forked sessions; vLLM and
        servers: one request for n = K), each with its own seed."""
        if self.temperature == 0.0:
            gen = ctx.write_step("target")
            ctx.report("target", gen.usage)  # the controller appends the step if it is kept
            return [gen]
        seeds = [sample_seed(self.seed, ctx.problem.id, ctx.step_index, k) for k in range(self.k)]
        gens, calls = ctx.write_steps("target", [[]] * self.k, temperature=self.temperature, seeds=seeds)
        report_written(ctx, "target", gens, calls)
        return gens

    def route(self, ctx: StepContext) -> Decision:
        if ctx.draft is None or ctx.draft_text is None:
            raise RuntimeError("the collecting oracle needs the draft's step")
        features = features_from_context(ctx)
        history = [s.author for s in ctx.steps]
        draft_score, judge_s = self._judge(ctx, ctx.draft_text)
        gens: list[Generation] = []
        samples: list[TargetSample] = []
        target_s = 0.0
        for gen in self._target_steps(ctx):
            text = ctx.step_text(gen)
            # the draft's own step again: advantage exactly 0, no judge call (float noise is no label)
            score, js = (draft_score, 0.0) if same_step(text, ctx.draft_text) else self._judge(ctx, text)
            judge_s += js
            target_s += gen.usage.seconds
            gens.append(gen)
            samples.append(TargetSample(text=text, tokens=len(gen.token_ids), score=score,
                                        seconds=gen.usage.seconds))
        target_score = sum(s.score for s in samples) / len(samples)
        advantage = target_score - draft_score
        label = target_better(target_score, draft_score, self.threshold)
        trace = StepTrace(
            step_index=ctx.step_index, history=history, draft_text=ctx.draft_text,
            draft_tokens=len(ctx.draft.token_ids), draft_score=draft_score, targets=samples,
            target_score=target_score, advantage=advantage, label=label, features=features,
            seconds={"draft": ctx.draft.usage.seconds, "judge": judge_s, "target": target_s},
        )
        self.traces.append(trace)
        first = samples[0].score
        return Decision(escalate=label, score=draft_score, step=Candidate("target", gens[0]) if label else None,
                        target_score=first,
                        wasted=(first <= draft_score) if label else None)


# --------------------------------------------------------------------------- files

@dataclass
class Repair:
    """What reading the folder found and fixed."""

    torn_lines: int = 0
    removed_records: int = 0  # records of problems cut short
    removed_problems: list[str] = field(default_factory=list)


def read_traces(path: Path, repair: Repair | None = None) -> list[TraceRecord]:
    """The complete problems' records of a traces file, repairing the file in place.

    A torn last line is cut off (a complete record that only lacks its newline gets one); records
    of problems cut short (fewer than n_steps) are removed by an atomic rewrite. Any other invalid
    line, or a problem with duplicated or inconsistent records, is a ConfigError."""
    repair = repair if repair is not None else Repair()
    if not path.exists():
        return []
    got = jsonl.read(path, TraceRecord.model_validate_json, "not a valid trace record")
    repair.torn_lines += 1 if got.torn else 0
    groups: dict[str, list[TraceRecord]] = {}
    for rec in got.values:
        groups.setdefault(rec.problem_id, []).append(rec)
    incomplete: set[str] = set()
    for pid, recs in groups.items():
        idx = [r.step_index for r in recs]
        ns = {r.n_steps for r in recs}
        if len(ns) != 1 or len(set(idx)) != len(idx) or not set(idx) <= set(range(next(iter(ns)))):
            raise ConfigError(f"{path}: problem {pid!r} has duplicated or inconsistent records; "
                              "the file was not written by this collector alone")
        if len(recs) < next(iter(ns)):
            incomplete.add(pid)
    keep = [x for x in got.lines if x.value.problem_id not in incomplete]
    repair.removed_records = sum(len(groups[p]) for p in incomplete)
    repair.removed_problems = sorted(incomplete)
    data = b"".join(x.raw + b"\n" for x in keep)
    if data != path.read_bytes():  # every kept line is kept byte for byte; blank lines go
        jsonl.replace(path, data)
    return [x.value for x in keep]


def _problem_id(raw: bytes) -> str:
    value = json.loads(raw)
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def read_done(path: Path) -> list[str]:
    """The ids in done.txt; a torn last line is cut off."""
    return jsonl.read_values(path, _problem_id, "not a problem id (a JSON string)")


# --------------------------------------------------------------------------- the run

class CollectSummary(BaseModel):
    out_dir: str
    traces: str
    n_problems: int  # problems of the config
    n_skipped: int  # already finished before this run
    n_collected: int  # finished by this run
    n_records: int  # records in the file now
    n_new_records: int  # records written by this run
    label_share: float  # share of label=True over all records in the file
    removed_records: int = 0  # records of problems cut short, removed on start
    seconds: float = 0.0


def _problems(cfg: CollectConfig) -> list[Problem]:
    from eval.datasets import load_dataset

    if cfg.dataset.strip().lower() == "synthetic":
        problems = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                                steps=cfg.synthetic_steps, split=cfg.synthetic_split)
    else:
        problems = load_dataset(cfg.dataset, data_dir=cfg.data_dir, limit=cfg.limit)
    ids = [p.id for p in problems]
    if any(not i for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"dataset {cfg.dataset!r} has missing or duplicate problem ids; traces could not be "
                          "told apart")
    return problems


def _limits(cfg: CollectConfig) -> dict[str, Any]:
    # force_answer off: a forced final-answer step is no routing decision and the answer is not used
    kw = {**cfg.limits, "max_steps": cfg.max_steps, "max_tokens": cfg.max_tokens, "step_tokens": cfg.step_tokens,
          "few_shot": cfg.few_shot, "force_answer": False}
    make_limits(**kw)  # a bad value fails here, before any model loads
    return kw


def _records(cfg: CollectConfig, problem: Problem, traces: list[StepTrace], authors: list[str],
             draft_model: str, target_model: str, judge: str) -> list[TraceRecord]:
    n = len(traces)
    return [TraceRecord(
        dataset=cfg.dataset, problem_id=problem.id, step_index=t.step_index, n_steps=n, history=t.history,
        draft_text=t.draft_text, draft_tokens=t.draft_tokens, draft_score=t.draft_score, targets=t.targets,
        target_score=t.target_score, advantage=t.advantage, label=t.label, behaviour_author=authors[t.step_index],
        features=t.features, feature_names=list(FEATURE_NAMES), feature_version=FEATURE_VERSION, judge=judge,
        draft_model=draft_model, target_model=target_model, seconds=t.seconds,
    ) for t in traces]


def collect(config: CollectConfig | dict[str, Any], out_dir: str | Path, progress: bool = True,
            concurrency: int = 1) -> CollectSummary:
    """Collect (or resume collecting) traces of `config` into `out_dir` (see the module docstring).
    `concurrency` problems are solved side by side (their decoding batched where the engine can); each
    problem's traces are appended whole, then its id to done.txt, in the order problems finish."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    t_start = time.perf_counter()
    cfg = make_config(**config) if isinstance(config, dict) else config
    _check(cfg)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file, not a folder")
    limits = _limits(cfg)
    draft_model, target_model = str(parse_spec(cfg.draft)), str(parse_spec(cfg.target))
    problems = _problems(cfg)
    router = CollectingOracle(cfg.judge, cfg.judge_options, cfg.target_samples, cfg.temperature, cfg.seed)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder {out}: {e.strerror}") from None
    cfg_path, traces_path, done_path = out / CONFIG_FILE, out / TRACES_FILE, out / DONE_FILE
    identity = cfg.identity()
    if not jsonl.check_identity(
            cfg_path, identity, unreadable=f"{cfg_path} is not a collect config: use a new --out folder",
            differs=f"{out} holds traces of a different collection (dataset, limit, seed, models, judge, "
                    "samples, temperature or limits differ): use a new --out folder"):
        if traces_path.exists() or done_path.exists():
            raise ConfigError(f"{out} holds traces without {CONFIG_FILE}: use a new --out folder")
        jsonl.write_identity(cfg_path, identity)

    repair = Repair()
    existing = read_traces(traces_path, repair)
    if repair.removed_records:  # a torn line was reported by jsonl.read
        log.warning("%s: removed %d record(s) of %d problem(s) cut short", traces_path, repair.removed_records,
                    len(repair.removed_problems))
    complete = {r.problem_id for r in existing}
    listed = set(read_done(done_path)) - set(repair.removed_problems)
    missing = [p.id for p in problems if p.id in complete and p.id not in listed]
    if missing:  # records were written but the crash came before done.txt
        jsonl.append(done_path, missing)
    done = complete | listed
    todo = [p for p in problems if p.id not in done]
    log.info("%d problems; %d done, %d to do", len(problems), len(problems) - len(todo), len(todo))

    n_records = len(existing)
    n_true = sum(r.label for r in existing)
    new_records = 0
    if todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from reasoning.api import Solver
        from reasoning.batching import for_each

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("steps {task.fields[steps]}  label=True {task.fields[share]}"),
                       disable=not progress, transient=False)
        lock = threading.Lock()  # the files, the counts and the bar, shared by the problems side by side

        def share() -> str:
            return f"{n_true}/{n_records} ({n_true / n_records:.0%})" if n_records else "-"

        def one(problem: Problem) -> None:
            nonlocal n_records, n_true, new_records
            mine = copy.copy(router)  # this problem's traces, the models and the judge shared
            mine.reset()
            sol = Solver(cfg.draft, cfg.target, mine, **limits).solve(problem)
            authors = [s.author for s in sol.steps]
            routed = [s for s in sol.steps if s.kind != "forced_answer"]
            if [t.step_index for t in mine.traces] != [s.index for s in routed]:
                raise RuntimeError(f"problem {problem.id}: the routed steps and the solution's steps differ")
            recs = _records(cfg, problem, mine.traces, authors, draft_model, target_model, cfg.judge)
            with lock:
                if recs:
                    jsonl.append(traces_path, recs)  # one write call for the whole problem
                jsonl.append(done_path, problem.id)
                n_records += len(recs)
                n_true += sum(r.label for r in recs)
                new_records += len(recs)
                bar.update(task, advance=1, steps=n_records, share=share())

        with bar:
            task = bar.add_task(f"collect {cfg.dataset}", total=len(problems), completed=len(problems) - len(todo),
                                steps=n_records, share=share())
            for_each(one, todo, concurrency)
    return CollectSummary(
        out_dir=str(out), traces=str(traces_path), n_problems=len(problems), n_skipped=len(problems) - len(todo),
        n_collected=len(todo), n_records=n_records, n_new_records=new_records,
        label_share=n_true / n_records if n_records else 0.0, removed_records=repair.removed_records,
        seconds=time.perf_counter() - t_start,
    )


__all__ = [
    "CONFIG_FILE", "DONE_FILE", "TRACES_FILE", "CollectConfig", "CollectSummary", "CollectingOracle", "Repair",
    "StepTrace", "collect", "make_config", "read_done", "read_traces", "sample_seed",
]
