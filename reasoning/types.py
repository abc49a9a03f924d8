"""Records that cross a file or process boundary: problems, steps, solutions and their costs.

All are pydantic v2 models; `Solution.model_validate_json(s.model_dump_json())` is lossless.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoning.grading import Grade, grade
from reasoning.metrics import STAGES, Costs, Stage, StageCost, escalation_rate  # noqa: F401 (re-exported)

SCHEMA_VERSION = 1

Author = Literal["draft", "target"]
# no_answer: the solution ended without an answer and the forced-answer step read none either
StopReason = Literal["answer", "eos", "max_steps", "token_budget", "repeated_step", "no_answer"]
StepEnd = Literal["delimiter", "think_end", "token_cap", "eos", "stop"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Record):
    """One question to solve. `images`: file paths or data:image/...;base64 URLs (not fetched: no http)."""

    question: str
    id: str = ""
    gold: str | None = None
    images: list[str] = Field(default_factory=list)
    meta: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    def grade(self, text: str) -> Grade:
        """`text` (a solution's answer text) graded against the gold in the problem's answer format."""
        fmt = self.meta.get("answer_format")
        return grade(text, self.gold or "", fmt if isinstance(fmt, str) else None)


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
        return None if self.problem.gold is None else self.problem.grade(self.answer_text).correct

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
