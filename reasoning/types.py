"""Records that cross a file or process boundary: problems, steps, solutions and their costs.

All are pydantic v2 models; `Solution.model_validate_json(s.model_dump_json())` is lossless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoning.grading import grade

SCHEMA_VERSION = 1

Stage = Literal["draft", "judge", "router", "target"]
STAGES: tuple[Stage, ...] = ("draft", "judge", "router", "target")
Author = Literal["draft", "target"]
# no_answer: the solution ended without an answer and the forced-answer step read none either
StopReason = Literal["answer", "eos", "max_steps", "token_budget", "repeated_step", "no_answer"]
StepEnd = Literal["delimiter", "think_end", "token_cap", "eos", "stop"]


def escalation_rate(escalated: Sequence[bool | float]) -> float | None:
    """The escalation rate: the share of routed steps that escalate (the target writes them in the
    draft's place), one flag a step (or the share of a step the target wrote, for a handoff); None when
    no step was routed. A threshold is calibrated to it (routers.arbitrage_model.tau_table), and eval
    records and the server report it (`Solution.escalation_rate`)."""
    return float(sum(escalated)) / len(escalated) if len(escalated) else None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Record):
    """One question to solve. `images`: file paths or data:image/...;base64 URLs (not fetched: no http)."""

    question: str
    id: str = ""
    gold: str | None = None
    images: list[str] = Field(default_factory=list)
    meta: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class StageCost(_Record):
    """Work done by one stage. input_tokens: tokens run through the model without being sampled
    (prompt, appended text, scored text); output_tokens: tokens sampled."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    flops: float = 0.0  # estimated: 2 x model parameters x tokens run (prefill, and decode but the last token)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: StageCost) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.seconds += other.seconds
        self.flops += other.flops


class Costs(_Record):
    """Per-stage costs. `discarded` is the part of `draft` spent on draft steps that were thrown away
    (it is already included in `draft`, and shown apart so waste is visible)."""

    draft: StageCost = Field(default_factory=StageCost)
    judge: StageCost = Field(default_factory=StageCost)
    router: StageCost = Field(default_factory=StageCost)
    target: StageCost = Field(default_factory=StageCost)
    discarded: StageCost = Field(default_factory=StageCost)

    def stage(self, name: Stage) -> StageCost:
        return getattr(self, name)

    def add(self, other: Costs) -> None:
        for name in (*STAGES, "discarded"):
            getattr(self, name).add(getattr(other, name))

    @property
    def seconds(self) -> float:
        return sum(self.stage(s).seconds for s in STAGES)

    @property
    def flops(self) -> float:
        return sum(self.stage(s).flops for s in STAGES)


class TokenStats(_Record):
    """Summary of the draft's own per-token log-probabilities for one step (router features)."""

    n_tokens: int
    mean_logprob: float
    min_logprob: float
    last_logprob: float
    mean_entropy: float


class Step(_Record):
    index: int
    text: str
    author: Author
    kind: Literal["reasoning", "answer", "forced_answer"] = "reasoning"
    in_thinking: bool = False
    tokens: int = 0
    end: StepEnd = "delimiter"
    draft_text: str | None = None
    draft_tokens: int = 0
    draft_stats: TokenStats | None = None
    handoff_tokens: int = 0  # the draft's tokens kept in a target step (handoff: at its start; two-way: anywhere)
    score: float | None = None  # the router's score of the draft step
    target_score: float | None = None  # the target step's score, where the router judged it too
    decision: Literal["keep", "escalate"] | None = None
    threshold: float | None = None  # the router's threshold for this step (load-aware routing moves it)
    target_load: int | None = None  # target calls queued or running when the step was routed
    wasted_escalation: bool | None = None
    costs: Costs = Field(default_factory=Costs)

    @property
    def target_share(self) -> float:
        """How much of the step the target wrote: 1 or 0 by its author, the share of its tokens after
        the proposal's kept head for a handoff step."""
        if self.author != "target":
            return 0.0
        return 1.0 - self.handoff_tokens / self.tokens if self.handoff_tokens and self.tokens else 1.0


class SolveConfig(_Record):
    draft: str
    target: str
    router: str
    threshold: float | None = None
    max_steps: int
    max_tokens: int
    step_tokens: int
    delimiter: str
    few_shot: int | None = None
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    think: bool = False
    system_prompt: bool = True
    repeat: Literal["any", "consecutive"] = "any"


class Solution(_Record):
    schema_version: int = SCHEMA_VERSION
    problem: Problem
    steps: list[Step] = Field(default_factory=list)
    answer: str | None = None
    answer_rule: str | None = None
    stop_reason: StopReason
    forced_answer: bool = False
    costs: Costs = Field(default_factory=Costs)
    wall_seconds: float = 0.0
    config: SolveConfig

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.steps)

    @property
    def answer_text(self) -> str:
        """The part of the solution that holds the final answer: the steps after the thinking when the
        solution thought (none if it never closed its thinking), else the whole text."""
        if not any(s.in_thinking for s in self.steps):
            return self.text
        return "\n\n".join(s.text for s in self.steps if not s.in_thinking)

    @property
    def correct(self) -> bool | None:
        """Graded as `specstep eval` grades (reasoning.grading); None without a gold answer."""
        if self.problem.gold is None:
            return None
        fmt = self.problem.meta.get("answer_format")
        return grade(self.answer_text, self.problem.gold, fmt if isinstance(fmt, str) else None).correct

    def escalation_rate(self) -> float | None:
        """`escalation_rate` of the solution's routed steps: every step but a forced answer, kept (the
        draft wrote it) or escalated (the target wrote it; under target-only, every step). A handoff
        step is a partial escalation: the share of its tokens the target wrote."""
        return escalation_rate([s.target_share for s in self.steps if s.kind != "forced_answer"])

    def acceptance(self) -> dict[str, float]:
        """Share of proposed draft steps (and draft tokens) that were kept."""
        proposed = [s for s in self.steps if s.draft_text is not None]
        kept = [s for s in proposed if s.decision == "keep"]
        ptok = sum(s.draft_tokens for s in proposed)
        ktok = sum(s.draft_tokens for s in kept)
        return {
            "steps": len(kept) / len(proposed) if proposed else 0.0,
            "tokens": ktok / ptok if ptok else 0.0,
        }
