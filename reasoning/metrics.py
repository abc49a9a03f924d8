"""Every counter in one place: what a model call cost (`Usage`), a stage's and a step's totals (`StageCost`,
`Costs`), and the rules that charge calls to stages: work on the draft's step on trial, thrown-away
draft tokens, a judge's catch-up, the router's own time, draft work never used. The records that
carry them (reasoning.types) and the loop (reasoning.controller) use these rules and no others.

Columns, one meaning each: `input_tokens` are tokens a model ran without sampling them (a prompt,
text another model wrote, a judge's question); `output_tokens` tokens it sampled; `flops` 2 x
parameters x tokens it ran (its input, and its samples but the last, which the next call runs);
`seconds` wall time. `Costs.discarded` is the part of the draft's column spent on output tokens that
were not kept (a rejected proposal, unchosen samples, a probe, a dropped plan), shown apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["draft", "judge", "router", "target"]
STAGES: tuple[Stage, ...] = ("draft", "judge", "router", "target")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def escalation_rate(escalated: Sequence[bool | float]) -> float | None:
    """The escalation rate: the share of routed steps that escalate (the target writes them in the
    draft's place), one flag a step (or the share of a step the target wrote, for a handoff); None when
    no step was routed. A threshold is calibrated to it (routers.arbitrage_model.tau_table), and eval
    records and the server report it (`Solution.escalation_rate`)."""
    return float(sum(escalated)) / len(escalated) if len(escalated) else None


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


@dataclass(slots=True)
class Usage:
    """What one call cost: tokens run through the model without sampling, tokens sampled, seconds."""

    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    flops: float = 0.0  # estimated: 2 x parameters x tokens run (the input, the outputs but the last)
    prefill_seconds: float | None = None  # of `seconds`, the forward pass over the input (where measured)

    def cost(self) -> StageCost:
        return StageCost(calls=1, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                         seconds=self.seconds, flops=self.flops)

    def part(self, share: float, input_tokens: int) -> Usage:
        """A share of this call (seconds and FLOPs pro rata) with `input_tokens` of its input."""
        return Usage(input_tokens=input_tokens, seconds=self.seconds * share, flops=self.flops * share)

    def outputs(self, n: int) -> Usage:
        """The part of this call spent on `n` of its output tokens: FLOPs pro rata by tokens; seconds a
        share of the measured decode time where the prefill was timed apart, else pro rata by tokens."""
        share = n / (self.input_tokens + self.output_tokens) if n else 0.0
        if self.prefill_seconds is not None and self.output_tokens:
            seconds = max(0.0, self.seconds - self.prefill_seconds) * n / self.output_tokens
        else:
            seconds = self.seconds * share
        return Usage(output_tokens=n, seconds=seconds, flops=self.flops * share)


    def split_outputs(self, n: int) -> tuple[Usage, Usage]:
        """This call as two parts: all but its last `n` output tokens (the input, the prefill's seconds),
        and those `n` tokens (`outputs(n)`); the parts add up to the call."""
        tail = self.outputs(n)
        head = Usage(self.input_tokens, self.output_tokens - n, self.seconds - tail.seconds, self.flops - tail.flops,
                     self.prefill_seconds)
        return head, tail

def usage(params: int, input_tokens: int = 0, output_tokens: int = 0, seconds: float = 0.0) -> Usage:
    """A call's usage with FLOPs estimated as 2 x `params` x tokens the model ran: its input, and each token
    it sampled but the last (which the next call runs, as its input)."""
    return Usage(input_tokens, output_tokens, seconds, 2.0 * params * (input_tokens + max(0, output_tokens - 1)))


@dataclass
class Report:
    stage: Stage
    usage: Usage
    on_trial: bool = False
    thrown_away: bool = False
    calls: int = 1


def charge(costs: Costs, reports: Sequence[Report], keep: bool = False) -> float:
    """Add reported calls to `costs`; returns their seconds. Work on the draft's step on trial is part
    of a call already counted: its model's (no call) if the step is kept, else the judge's."""
    seconds = 0.0
    for r in reports:
        cost = r.usage.cost()
        cost.calls = r.calls
        stage = r.stage
        if r.on_trial:
            stage, cost.calls = (stage if keep else "judge"), 0
        costs.stage(stage).add(cost)
        if r.thrown_away:
            costs.discarded.add(cost)
        seconds += r.usage.seconds
    return seconds


def charge_router(costs: Costs, reports: Sequence[Report], seconds: float, keep: bool, calls: int) -> None:
    """A router call that took `seconds`: the calls it reported go to their stages (work on the draft's
    step on trial settled by `keep`), the rest of its time is the router's own."""
    reported = charge(costs, reports, keep)
    costs.router.add(StageCost(calls=calls, seconds=max(0.0, seconds - reported)))


def thrown(proposal: Usage, kept: int) -> StageCost:
    """What a proposal not committed wasted: its output tokens after the first `kept` (a handoff keeps
    its head); the whole call when none is kept."""
    if not kept:
        return proposal.cost()
    cost = proposal.outputs(max(0, proposal.output_tokens - kept)).cost()
    cost.calls = 0  # a share of the proposal's call
    return cost


def unused(work: Sequence[Usage]) -> StageCost:
    """Draft work a router paid for and never used (steps planned ahead and never served): thrown away,
    a share of calls already counted."""
    total = StageCost()
    for u in work:
        cost = u.cost()
        cost.calls = 0
        total.add(cost)
    return total


def judging_parts(u: Usage, judged: int) -> tuple[Usage | None, Usage]:
    """A judging call whose input held `judged` tokens of judging (steps, a question) and, before them,
    text the session had not read yet: (the catch-up, the model's own reading, which it needs to write
    its next step anyway, or None; the judging). Seconds and FLOPs pro rata by input tokens."""
    behind = max(0, u.input_tokens - judged)
    if not behind:
        return None, u
    share = behind / u.input_tokens
    return u.part(share, behind), u.part(1 - share, u.input_tokens - behind)
