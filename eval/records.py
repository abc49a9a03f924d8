"""Append-only JSONL of evaluation records: flushed and fsynced per record, resumable after a crash
(a torn last line is cut off; finished keys are skipped, so no record is lost or duplicated)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reasoning import jsonl
from reasoning.types import Costs, Solution

SCHEMA_VERSION = 1


class EvalRecord(BaseModel):
    """One (problem, policy, threshold) run."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    key: str
    dataset: str
    problem_id: str
    policy: str
    threshold: float | None = None
    escalation_rate_goal: float | None = None
    gold: str
    answer: str | None
    extracted: str | None
    rule: str | None
    grade_method: str | None = None
    correct: bool
    stop_reason: str
    wall_seconds: float
    costs: Costs
    steps: int
    target_steps: int
    escalation_rate: float  # Solution.escalation_rate: share of routed steps the target wrote (0 without steps)
    wasted_escalations: int
    target_token_share: float  # share of the solution's tokens written by the target
    split: Literal["val", "test"] = "test"  # val: run to choose thresholds on (eval.select), not reported
    repeat: int = 0  # the run's repeat of this (problem, configuration)
    concurrency: int = 1  # solves side by side when this one ran (wall_seconds include their work)
    modeled_seconds: float | None = None  # set when summarising (eval.latency), never stored
    solution: Solution


def config_key(policy: str, threshold: float | None, rate: float | None) -> str:
    if rate is not None:
        return f"{policy}@rate={rate:g}"
    return policy if threshold is None else f"{policy}@{threshold:g}"


def read_records(path: Path) -> list[EvalRecord]:
    """Read records. A torn last line (a crash mid-write) is cut off the file; a complete last
    record without its newline gets one, so that the next append starts a new line."""
    return jsonl.read_values(path, EvalRecord.model_validate_json, "not a valid evaluation record")


class RecordWriter(jsonl.Appender):
    """Appends records to records.jsonl, each flushed and fsynced."""
