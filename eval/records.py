"""Append-only JSONL of evaluation records: flushed and fsynced per record, resumable after a crash
(a torn last line is cut off; finished keys are skipped, so no record is lost or duplicated)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from reasoning.errors import ConfigError
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
    escalation_rate: float  # share of steps written by the target (forced answers excluded)
    wasted_escalations: int
    target_token_share: float  # share of the solution's tokens written by the target
    solution: Solution


def config_key(policy: str, threshold: float | None, rate: float | None) -> str:
    if rate is not None:
        return f"{policy}@rate={rate:g}"
    return policy if threshold is None else f"{policy}@{threshold:g}"


def read_records(path: Path) -> list[EvalRecord]:
    """Read records. A torn last line (a crash mid-write) is cut off the file; a complete last
    record without its newline gets one, so that the next append starts a new line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out: list[EvalRecord] = []
    offset = 0
    for n, line in enumerate(lines, start=1):
        unterminated = n == len(lines)  # text after the last newline
        if line.strip():
            try:
                out.append(EvalRecord.model_validate_json(line))
            except (ValidationError, ValueError):
                if not unterminated:
                    raise ConfigError(f"{path}:{n}: not a valid evaluation record") from None
                with path.open("r+b") as f:
                    f.truncate(offset)
                break
            if unterminated:
                with path.open("ab") as f:
                    f.write(b"\n")
        offset += len(line) + 1
    return out


class RecordWriter:
    def __init__(self, path: Path):
        self.path = path
        self._f = path.open("a", encoding="utf-8")

    def write(self, record: EvalRecord) -> None:
        self._f.write(record.model_dump_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
