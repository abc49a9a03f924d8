"""A deterministic latency model: per stage (the draft model, the target model, the judge, the router),
seconds = overhead x calls + prefill x tokens read + decode x tokens written, fitted by non-negative least
squares from a run's own calls (every step's per-stage costs), or read from a profile file measured
elsewhere (another machine, a GPU). A record's modeled latency is the sum over its stages: the machine's
noise does not move it, and another profile answers what the same run would cost at other per-token
costs. The controller's own time (between model calls) is not modeled: it is in wall time only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasoning.errors import ConfigError
from reasoning.types import STAGES, Costs, Solution, StageCost

if TYPE_CHECKING:
    from eval.records import EvalRecord

PROFILE_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "data" / "profiles"  # NAME.json, given as --latency-profile NAME


class StageFit(BaseModel):
    """Seconds of one stage's calls: overhead per call, prefill per token read, decode per token written."""

    model_config = ConfigDict(extra="forbid")

    model: str = ""  # the model this stage ran ("" where the run does not say, as for a judge)
    overhead: float = Field(ge=0)
    prefill: float = Field(ge=0)
    decode: float = Field(ge=0)
    rows: int = 0  # (step, stage) rows it was fitted on
    r2: float | None = None  # of the fit on those rows
    rel_rmse: float | None = None  # root mean squared error over the mean measured seconds of a row

    def seconds(self, cost: StageCost) -> float:
        return self.overhead * cost.calls + self.prefill * cost.input_tokens + self.decode * cost.output_tokens


class LatencyProfile(BaseModel):
    """Stage fits for one draft/target pair on one machine and engine (a JSON file)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = PROFILE_VERSION
    draft: str
    target: str
    machine: str = ""
    stages: dict[str, StageFit]
    # per solution: mean |modeled - measured stage seconds| / measured, on the run it was fitted on
    record_error: float | None = None

    def seconds(self, costs: Costs) -> float:
        """Modeled seconds of a solution's (or a step's) stage costs."""
        total = 0.0
        for s in STAGES:
            c = costs.stage(s)
            if c.calls == 0 and c.tokens == 0:
                continue
            fit = self.stages.get(s)
            if fit is None:
                raise ConfigError(f"latency profile has no {s!r} stage, which this run uses: fit one from a run "
                                  f"that has it (stages: {', '.join(sorted(self.stages)) or 'none'})")
            total += fit.seconds(c)
        return total

    def check_pair(self, draft: str, target: str, source: str) -> None:
        if (self.draft, self.target) != (draft, target):
            raise ConfigError(f"latency profile {source} is for draft {self.draft!r} and target {self.target!r}, "
                              f"not {draft!r} and {target!r}")


def shipped_profiles() -> list[str]:
    return sorted(f.stem for f in SHIPPED.glob("*.json"))


def read_profile(path: str | Path) -> LatencyProfile:
    """A profile file, or the name of a shipped one (`shipped_profiles()`); one that is missing or does
    not parse raises ConfigError."""
    p = Path(path)
    if not p.exists() and str(path) in shipped_profiles():
        p = SHIPPED / f"{path}.json"
    try:
        return LatencyProfile.model_validate_json(p.read_bytes())
    except OSError as e:
        raise ConfigError(f"latency profile {p}: {e.strerror or e} (a file, or a shipped profile: "
                          f"{', '.join(shipped_profiles()) or 'none'})") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "file"
        raise ConfigError(f"latency profile {p} is not a valid profile ({where}: {first['msg']})") from None


def _rows(solutions: Iterable[Solution], stage: str) -> np.ndarray:
    """(calls, tokens read, tokens written, seconds) of every step's `stage` costs that made calls."""
    out = []
    for sol in solutions:
        for step in sol.steps:
            c = step.costs.stage(stage)
            if c.calls:
                out.append((c.calls, c.input_tokens, c.output_tokens, c.seconds))
    return np.array(out, dtype=float).reshape(-1, 4)


def fit_stage(rows: np.ndarray, model: str = "") -> StageFit | None:
    """Non-negative least squares of seconds on (calls, tokens read, tokens written); None without rows."""
    from scipy.optimize import nnls

    if len(rows) == 0:
        return None
    x, y = rows[:, :3], rows[:, 3]
    scale = np.maximum(x.max(axis=0), 1.0)  # columns of comparable size for the solver
    coef, _ = nnls(x / scale, y)
    coef = coef / scale
    pred = x @ coef
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    rel = math.sqrt(ss_res / len(y)) / float(y.mean()) if y.mean() > 0 else None
    return StageFit(model=model, overhead=float(coef[0]), prefill=float(coef[1]), decode=float(coef[2]),
                    rows=len(rows), r2=r2, rel_rmse=rel)


def fit_profile(solutions: list[Solution], draft: str, target: str, machine: str = "") -> LatencyProfile:
    """Fit every stage that made calls in `solutions` (steps of one draft/target pair)."""
    models = {"draft": draft, "target": target}
    stages = {}
    for s in STAGES:
        fit = fit_stage(_rows(solutions, s), models.get(s, ""))
        if fit is not None:
            stages[s] = fit
    profile = LatencyProfile(draft=draft, target=target, machine=machine, stages=stages)
    errors = []
    for sol in solutions:
        measured = sol.costs.seconds
        if measured > 0:
            errors.append(abs(profile.seconds(sol.costs) - measured) / measured)
    profile.record_error = float(np.mean(errors)) if errors else None
    return profile


def with_modeled_seconds(records: list[EvalRecord], profile: LatencyProfile | None = None,
                         machine: str = "") -> tuple[list[EvalRecord], list[LatencyProfile]]:
    """Copies of `records` with `modeled_seconds` set, and the profiles used: `profile` for the records
    of its draft/target pair where given, one fitted per pair on that pair's records for the others."""
    pairs: dict[tuple[str, str], list[EvalRecord]] = {}
    for r in records:
        pairs.setdefault((r.solution.config.draft, r.solution.config.target), []).append(r)
    fitted = {pair: profile if profile is not None and pair == (profile.draft, profile.target)
              else fit_profile([r.solution for r in rs], *pair, machine=machine) for pair, rs in pairs.items()}
    if profile is not None and not pairs:
        fitted = {(profile.draft, profile.target): profile}
    out = [r.model_copy(update={"modeled_seconds": fitted[(r.solution.config.draft, r.solution.config.target)]
                                .seconds(r.costs)}) for r in records]
    return out, list(fitted.values())


def write_profile(profile: LatencyProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.model_dump(), indent=2) + "\n")


def machine_name() -> str:
    """A short description of this machine's processor and accelerator, for a profile's `machine`."""
    import platform

    name = f"{platform.machine()} {platform.processor() or ''}".strip()
    try:
        import torch

        if torch.cuda.is_available():
            return f"{name}, {torch.cuda.get_device_name(0)}"
        return f"{name}, {torch.get_num_threads()} CPU threads"
    except ImportError:
        return name
