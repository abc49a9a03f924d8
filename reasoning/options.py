"""The solve options: the one place their defaults are written.

`Limits` holds the budgets and sampling settings of a solve; `Solver`/`solve()`, the CLI's `solve`
and `serve` (and so the server, whose budget is its Solver's) take their defaults from it. `eval` and
`collect` run many solves and default to the smaller budgets of `SWEEP_LIMITS`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reasoning.backends.base import Sampling
from reasoning.errors import ConfigError
from reasoning.prompts import PLAIN_STOPS

DEFAULT_DRAFT = "smollm2-135m"
DEFAULT_TARGET = "gemma3-270m"
DEFAULT_ROUTER = "target-only"


class Limits(BaseModel):
    """Budgets and sampling settings of one solve."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(24, ge=0, description="steps of the solution at most (0: no cap; the token budget ends it)")
    max_tokens: int = Field(1024, ge=1, description="budget for the solution's tokens")
    step_tokens: int = Field(256, ge=1, description="token cap of one step")
    delimiter: str = Field("\n\n", min_length=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sampling: the smallest set of likeliest tokens whose "
                         "probability reaches top_p (1: off; greedy decoding ignores it)")
    top_k: int = Field(0, ge=0, description="sampling: the top_k likeliest tokens (0: off)")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="sampling: tokens at least min_p times as likely as the "
                         "likeliest (0: off)")
    seed: int | None = None
    few_shot: int | None = Field(None, ge=0, le=3, description="worked examples; None: the models' default "
                                 "(2, or 0 for the testbed models)")
    think: bool = Field(False, description="open the answer with <think> (reasoning models)")
    stop_on_answer: bool = True
    stop_on_repeat: bool = True
    repeat: Literal["any", "consecutive"] = Field("any", description="a repeated step is one equal to any earlier "
                                                  "step, or to the one before it only (thinking models repeat short "
                                                  "paragraphs such as 'Wait,')")
    system_prompt: bool = Field(True, description="the instruction as a system message; False: no system message, "
                                "the instruction follows the question in the user's turn (DeepSeek-R1's advice)")
    end_stops: tuple[str, ...] = Field(PLAIN_STOPS, description="strings that end the whole solution")
    force_answer: bool = True
    forced_answer_tokens: int = Field(24, ge=1)
    ignore_eos: bool = Field(False, description="keep generating past end of sequence (benchmarks)")

    def sampling(self) -> Sampling | None:
        """The sampling filters, None when all are off."""
        f = Sampling(self.top_p, self.top_k, self.min_p)
        return None if f.off else f

    @model_validator(mode="after")
    def _check(self) -> Limits:
        if self.step_tokens > self.max_tokens:
            self.step_tokens = self.max_tokens
        return self


DEFAULT_LIMITS = Limits()
# eval and collect: many solves per run, so smaller budgets (step_tokens <= max_tokens, as Limits keeps it)
SWEEP_LIMITS = Limits(max_steps=16, max_tokens=768, step_tokens=128)


def make_limits(**values: Any) -> Limits:
    """`Limits(**values)`, with a bad value as a one-line ConfigError ("bad value for NAME: ...")."""
    try:
        return Limits(**values)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "limits"
        raise ConfigError(f"bad value for {name}: {err['msg']}") from None


__all__ = ["DEFAULT_DRAFT", "DEFAULT_LIMITS", "DEFAULT_ROUTER", "DEFAULT_TARGET", "SWEEP_LIMITS", "Limits",
           "make_limits"]
