"""The contract between the step loop and its policies.

For every step the controller hands routers and judges a `StepContext`: what is known about the
step (the problem, the accepted steps, the draft's proposal) and the few things a policy may do
(read a model's session, with or without the draft's step on trial; let a model write the step as
the controller would; report the cost of each model call). A router answers with a `Decision`.
Routers and judges never see the controller; the controller owns every total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from reasoning.backends.base import Backend, Generation, Session, Switch, Usage
from reasoning.metrics import Report
from reasoning.options import Limits
from reasoning.types import Problem, SolveConfig, Stage, Step

Model = Literal["draft", "target"]


@dataclass(frozen=True)
class Piece:
    """Text in the solution (a step with its delimiter) and the token ids its author wrote for it, in the
    author's vocabulary (None: no exact ids, so sessions append the text)."""

    text: str
    author: Model | None = None
    ids: tuple[int, ...] | None = None


@runtime_checkable
class StepContext(Protocol):
    """One step being decided. Policies read the fields and call the methods; nothing else."""

    problem: Problem
    steps: list[Step]  # accepted steps before this one
    draft: Generation | None  # the draft's proposal (None when the router does not need one)
    draft_text: str | None  # the proposal as a step (delimiter removed)
    step_index: int
    in_thinking: bool
    step_cap: int  # token cap of this step
    limits: Limits
    config: SolveConfig
    reported: list[Report]  # the calls reported for this step so far, in order
    reviewing: bool  # True while a router reviews the target's step (the draft's is settled)
    target_load: int | None  # set by load-aware routers: target calls queued or running

    def backend(self, model: Model) -> Backend:
        """The model's backend (for counting tokens, rendering, load)."""
        ...

    def session(self, model: Model, with_draft_step: bool = False) -> Session:
        """The model's session holding the prompt and the accepted steps; with `with_draft_step`,
        also the draft's step on trial (the session keeps it if the step is kept). A policy leaves
        a session as it found it (roll back to marks read off `n_tokens`)."""
        ...

    def write_step(self, model: Model, *, temperature: float | None = None, seed: int | None = None,
                   max_tokens: int | None = None, prefix: str | Sequence[Piece] = "",
                   switch: Switch | None = None) -> Generation:
        """Let a model write this step from the accepted prefix, with the controller's stops and
        cap (and its temperature, seed and the step's token cap unless given); the session is left
        at the prefix. With `prefix`, the model continues what follows the prefix: pieces (from `piece`
        and `draft_head`) go in with their authors' token ids where the model shares their vocabulary,
        text is encoded (the generation holds the continuation only); what the model wrote for this step
        before and `prefix` repeats stays in its KV. With `switch` (engines whose sessions have
        `can_switch`), the generation also ends after the first token whose entropy meets it. The caller
        reports the generation's usage."""
        ...

    def write_steps(self, model: Model, prefixes: Sequence[Sequence[Piece]], temperature: float | None = None,
                    seeds: Sequence[int | None] | None = None) -> tuple[list[Generation], int]:
        """Let a model write a step after each prefix (pieces following the accepted prefix; the same prefix
        K times with K seeds: K samples), side by side in one batched call where its engine can
        (transformers: sessions forked from the accepted prefix), else one after another; the session is
        left at the accepted prefix. Returns the generations and the model calls they took (1 when
        batched: the caller reports the first with calls=1, the rest 0)."""
        ...

    def piece(self, model: Model, gen: Generation) -> Piece:
        """A step `model` wrote (`gen`), with its delimiter and token ids, to continue with `write_step`."""
        ...

    def draft_head(self, n_tokens: int) -> Piece:
        """The proposal's first `n_tokens` tokens as a piece: `draft_prefix`'s text and the draft's ids."""
        ...

    def draft_prefix(self, n_tokens: int) -> str:
        """The text of the proposal's first `n_tokens` tokens (ValueError when they do not decode
        to a prefix of its text)."""
        ...

    def step_text(self, gen: Generation) -> str:
        """A generation as a step: cut at the delimiter, the delimiter removed."""
        ...

    def step_piece(self, gen: Generation) -> str:
        """The text a generation adds to the solution as a step (the delimiter included)."""
        ...

    def report(self, stage: Stage, usage: Usage, *, on_trial: bool = False, thrown_away: bool = False,
               calls: int = 1) -> None:
        """Account a model call. `on_trial`: work the model (`stage` "draft" or "target") did on the
        draft's step held on trial; charged to that model if the step is kept, to the judge if not.
        `thrown_away`: draft work whose text is not kept (also counted in `Costs.discarded`).
        `calls`: 0 for a share of a call that is reported in parts."""
        ...


@dataclass(frozen=True)
class Candidate:
    """A step a policy already wrote, to be committed as it is (a chosen sample, the target's step written
    beside the proposal, a step both models wrote). `draft_tokens`: in a step whose author is the target,
    how many of its tokens the draft wrote (a handoff); where the draft proposed the step, they are the
    proposal's first tokens, which are then not thrown away."""

    author: Model
    gen: Generation
    draft_tokens: int = 0


@dataclass
class Decision:
    """What a router decided about one step. Proposers write steps (the controller's proposal, or the
    router's own `proposal`, or any `step` already written); the decision only says which one is
    committed: `step` if given, else the proposal if kept, else the target writes the step."""

    escalate: bool
    score: float | None = None
    # The draft's step the router wrote itself (routers that do not `propose`): the step decided on,
    # committed when kept, and recorded as the step's draft.
    proposal: Generation | None = None
    # The step to commit, already written (and reported) by the router; None: the proposal when kept,
    # else the controller has the target write the step.
    step: Candidate | None = None
    target_score: float | None = None
    wasted: bool | None = None  # escalated although the target's step was not judged better
    threshold: float | None = None  # the threshold in effect (load-aware routing moves it)


@runtime_checkable
class Router(Protocol):
    """Every hook the controller calls."""

    name: str
    needs_draft: bool  # the draft model is loaded
    needs_target: bool
    proposes: bool  # with needs_draft: the draft writes a proposal before `route`
    reviews: bool  # `review` is called after each escalated step the target wrote

    def for_solve(self) -> Router:
        """The router one solve uses: its per-solve state (plans, counters) is that solve's alone, so
        solves running at the same time (the server's requests) never share it."""
        ...

    def route(self, ctx: StepContext) -> Decision: ...

    def review(self, ctx: StepContext, decision: Decision, target: Generation) -> None: ...

    def leftover(self) -> list[Usage]:
        """Draft work this solve paid for and never used (steps planned ahead and never served), asked
        once when the solve ends: it counts as thrown away."""
        ...


__all__ = ["Candidate", "Decision", "Model", "Piece", "Report", "Router", "StepContext"]
