"""Trace records: what `specstep collect` writes for every step and `specstep train-router` reads.

One JSONL line per step of a collected solution. A problem's records are written together in one
append (flushed and fsynced) after the problem is finished; each record carries `n_steps`, the
number of records its problem has, so a reader can tell a complete problem from one cut short by a
crash.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

TRACE_SCHEMA_VERSION = 1


class TargetSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    tokens: int
    score: float
    seconds: float


class TraceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = TRACE_SCHEMA_VERSION
    dataset: str
    problem_id: str
    step_index: int
    n_steps: int  # records of this problem (for detecting a problem cut short)
    history: list[str]  # author ("draft" | "target") of each earlier step
    draft_text: str
    draft_tokens: int
    draft_score: float
    targets: list[TargetSample]  # K target steps written from the same prefix
    target_score: float  # mean of the targets' scores
    advantage: float  # target_score - draft_score
    label: bool  # advantage > 0: the target would write a better step
    behaviour_author: str  # who wrote the step in the collected solution
    features: list[float]
    feature_names: list[str]
    feature_version: int
    judge: str
    draft_model: str
    target_model: str
    seconds: dict[str, float] = Field(default_factory=dict)  # draft, judge, target
