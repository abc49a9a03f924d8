"""The step loop: draft a step, let the router decide, maybe let the target rewrite it, append.

Each model keeps one session on its own rendering of the prompt. Both sessions hold the same
solution text; a session that fell behind (because the other model wrote the last steps) catches
up lazily by appending the missing text, so a model that is never asked (the target under
draft-only) never runs. The controller owns all accounting.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from reasoning.answers import extract_answer, last_boxed
from reasoning.backends.base import Backend, Generation, Session, Usage
from reasoning.errors import ConfigError
from reasoning.options import Limits  # re-exported: the loop's budgets live in reasoning.options
from reasoning.prompts import Prompt
from reasoning.segmenter import Segmenter
from reasoning.types import Costs, Problem, Solution, SolveConfig, Stage, StageCost, Step, StopReason

log = logging.getLogger(__name__)

FORCED_PREFIX = "The answer is \\boxed{"


# The contract between the loop and a router: after the draft proposes a step, the controller asks
# `router.route(ctx)` whether to keep it or escalate to the target. Routers never keep totals: judges
# and routers report their model calls through `RouteContext.report`, and the controller owns the
# accounting. Routers are built by name in reasoning.registry; their base class is routers.base.


@dataclass
class RouteContext:
    problem: Problem
    steps: list[Step]  # accepted steps before this one
    draft: Generation | None  # the draft's proposal (None when the router does not need one)
    draft_text: str | None  # the proposal as a step (delimiter removed)
    step_index: int
    in_thinking: bool
    controller: Controller
    step_cap: int = 256
    reported: list[tuple[Stage, Usage]] = field(default_factory=list)
    target_load: int | None = None  # set by load-aware routers: target calls queued or running
    reviewing: bool = False  # set while the router reviews the target's step (the draft's is settled)

    def report(self, stage: Stage | str, usage: Usage) -> None:
        """Judges and routers call this for every model call they make. Stage "trial:draft" or
        "trial:target" is work on the draft's step held on trial in that model's session: it is
        charged to that model if the step is kept, to the judge if it is rejected."""
        self.reported.append((stage, usage))


@dataclass
class Decision:
    escalate: bool
    score: float | None = None
    # A target step the router already wrote from the same prefix. The router leaves the target
    # session at that prefix (the step's text is not in it); the controller appends it.
    target: Generation | None = None
    target_score: float | None = None
    wasted: bool | None = None  # escalated although the target's step was not judged better
    threshold: float | None = None  # the threshold in effect (load-aware routing moves it)


@runtime_checkable
class Router(Protocol):
    name: str
    needs_draft: bool
    needs_target: bool

    def route(self, ctx: RouteContext) -> Decision: ...

    def review(self, ctx: RouteContext, decision: Decision, target: Generation) -> None: ...


@dataclass
class _Slot:
    """One model's session and how much of the solution text it already holds."""

    stage: str
    backend: Backend
    prompt: Prompt | None = None  # this model's prompt (the <think> prefix depends on its template)
    session: Session | None = None
    chars: int = 0
    # session length before the draft's current step, while the session holds it on trial
    trial: int | None = None

    def ready(self, prompt: Prompt, solution_text: str) -> Session:
        """The session holding exactly the prompt and the solution so far."""
        if self.session is None:
            self.session = self.backend.open_session(self.prompt or prompt)
            self.chars = 0
        if self.trial is not None:
            self.session.rollback(self.trial)
            self.trial = None
        if self.chars < len(solution_text):
            self.session.append(solution_text[self.chars:])
            self.chars = len(solution_text)
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class Controller:
    def __init__(self, draft: Backend | None, target: Backend | None, router: Router, limits: Limits,
                 config: SolveConfig):
        if router.needs_draft and draft is None:
            raise ConfigError(f"router {router.name!r} needs a draft model")
        if router.needs_target and target is None:
            raise ConfigError(f"router {router.name!r} needs a target model")
        self.draft_backend, self.target_backend = draft, target
        self.router, self.limits, self.config = router, limits, config
        self.segmenter = Segmenter(limits.delimiter, limits.step_tokens, end_stops=limits.end_stops)
        self.draft: _Slot | None = None
        self.target: _Slot | None = None
        self.prompt: Prompt | None = None
        self._head = ""  # "<think>\n" when the solution starts inside thinking
        self.solution_text = ""
        self._draft_piece: str | None = None

    # Judges and routers reach the sessions through these.
    def draft_session(self) -> Session:
        return self.draft.ready(self.prompt, self.solution_text)

    def target_session(self) -> Session:
        return self.target.ready(self.prompt, self.solution_text)

    def _seed(self, step: int, offset: int) -> int | None:
        return None if self.limits.seed is None else self.limits.seed * 1_000_003 + step * 7 + offset

    def session_with_draft_step(self, stage: str) -> Session:
        """A model's session holding the solution so far plus the draft's current step (for judges).
        If the step is kept, the session keeps it and needs no append later; if it is rejected, or
        anyone asks for the plain prefix, it is rolled back."""
        if self._draft_piece is None:
            raise RuntimeError("there is no draft step to judge")
        slot = self.draft if stage == "draft" else self.target
        if slot.trial is None:
            session = slot.ready(self.prompt, self.solution_text)
            slot.trial = session.n_tokens
            session.append(self._draft_piece)
        return slot.session

    def _settle_trials(self, keep: bool) -> None:
        """After the decision: sessions holding the draft's step on trial keep it or drop it."""
        for slot in (self.draft, self.target):
            if slot is None or slot.trial is None:
                continue
            if keep:
                slot.chars = len(self.solution_text) + len(self._draft_piece)
            else:
                slot.session.rollback(slot.trial)
            slot.trial = None

    def generate_step(self, stage: str, ctx: RouteContext) -> tuple[Generation, int]:
        """Let a model write the current step from the current prefix, as the controller would
        (same stops, cap and seed). Returns the generation and the session length before it."""
        slot = self.draft if stage == "draft" else self.target
        return self._generate(slot, ctx.step_index, ctx.in_thinking, ctx.step_cap)

    def _generate(self, slot: _Slot, step: int, thinking: bool, cap: int) -> tuple[Generation, int]:
        session = slot.ready(self.prompt, self.solution_text)
        mark = session.n_tokens
        gen = session.generate(max_tokens=cap, stop=self.segmenter.stops(thinking),
                               temperature=self.limits.temperature,
                               seed=self._seed(step, 0 if slot.stage == "draft" else 1),
                               ignore_eos=self.limits.ignore_eos)
        return gen, mark

    def run(self, problem: Problem, on_step: Callable[[Step], None] | None = None) -> Solution:
        lim, seg = self.limits, self.segmenter
        t_start = time.perf_counter()
        few_shot = 2 if lim.few_shot is None else lim.few_shot
        self.prompt = Prompt.math(problem.question, few_shot)
        self.solution_text = ""
        self.draft = _Slot("draft", self.draft_backend) if self.draft_backend is not None else None
        self.target = _Slot("target", self.target_backend) if self.target_backend is not None else None
        self._think_prompts(lim.think)
        self._check_context()
        steps: list[Step] = []
        costs = Costs()
        used = 0
        stop: StopReason | None = None
        try:
            while stop is None:
                if len(steps) >= lim.max_steps:
                    stop = "max_steps"
                    break
                if used >= lim.max_tokens:
                    stop = "token_budget"
                    break
                idx = len(steps)
                thinking = seg.in_thinking(self._head + self.solution_text)
                cap = min(lim.step_tokens, lim.max_tokens - used)
                c = Costs()

                # 1. draft proposes; its session holds the step on trial
                draft_gen, draft_text = None, None
                self._draft_piece = None
                if self.router.needs_draft:
                    draft_gen, draft_mark = self._generate(self.draft, idx, thinking, cap)
                    c.draft.add(draft_gen.usage.cost())
                    draft_cut = seg.cut(draft_gen)
                    draft_text, self._draft_piece = draft_cut.text, draft_cut.piece
                    if draft_cut.piece.startswith(draft_gen.text):
                        self.draft.session.append(draft_cut.piece[len(draft_gen.text):])
                    else:  # an end stop was cut off: the session must hold the piece only
                        self.draft.session.rollback(draft_mark)
                        self.draft.session.append(draft_cut.piece)
                    self.draft.trial = draft_mark

                # 2. router decides (judges report their own calls)
                ctx = RouteContext(problem, steps, draft_gen, draft_text, idx, thinking, self, cap)
                t0 = time.perf_counter()
                decision = self.router.route(ctx)
                routed = time.perf_counter() - t0
                keep = draft_gen is not None and not decision.escalate
                for stage, usage in ctx.reported:
                    cost = usage.cost()
                    if stage.startswith("trial:"):  # part of a call already counted
                        stage, cost.calls = (stage[len("trial:"):] if keep else "judge"), 0
                    c.stage(stage).add(cost)
                c.router.add(StageCost(calls=1, seconds=max(0.0, routed - sum(u.seconds for _, u in ctx.reported))))
                self._settle_trials(keep)

                # 3. keep, or discard and let the target write the step from the same prefix
                if keep:
                    gen, slot, cut = draft_gen, self.draft, draft_cut
                else:
                    if draft_gen is not None:
                        c.discarded.add(draft_gen.usage.cost())
                    slot = self.target
                    if decision.target is not None:  # already written (and paid for) by the router
                        gen, mark, in_session = decision.target, 0, False
                    else:
                        gen, mark = self._generate(self.target, idx, thinking, cap)
                        c.target.add(gen.usage.cost())
                        in_session = True
                        if getattr(self.router, "reviews", False):
                            # judges read the step after the prefix: take it out, the append adds it back
                            self.target.session.rollback(mark)
                            in_session = False
                            n_before = len(ctx.reported)
                            t1 = time.perf_counter()
                            ctx.reviewing = True
                            self.router.review(ctx, decision, gen)
                            reviewed = time.perf_counter() - t1
                            for stage, usage in ctx.reported[n_before:]:
                                c.stage(stage).add(usage.cost())
                            c.router.add(StageCost(seconds=max(0.0, reviewed - sum(
                                u.seconds for _, u in ctx.reported[n_before:]))))
                    # 4. the author's session keeps its tokens when they spell the step exactly
                    cut = seg.cut(gen)
                    if in_session and cut.piece.startswith(gen.text):
                        slot.chars = len(self.solution_text) + len(gen.text)
                    else:
                        if in_session:
                            slot.session.rollback(mark)
                        slot.chars = len(self.solution_text)
                self.solution_text += cut.piece
                used += len(gen.token_ids)
                final = lim.stop_on_answer and seg.is_final(cut.text, thinking)
                step = Step(
                    index=idx, text=cut.text, author=slot.stage,
                    kind="answer" if final else "reasoning", in_thinking=thinking,
                    tokens=len(gen.token_ids), end=cut.end,
                    draft_text=draft_text,
                    draft_tokens=len(draft_gen.token_ids) if draft_gen is not None else 0,
                    draft_stats=draft_gen.stats() if draft_gen is not None else None,
                    score=decision.score, target_score=decision.target_score,
                    threshold=decision.threshold, target_load=ctx.target_load,
                    decision=("escalate" if decision.escalate else "keep") if draft_gen is not None else None,
                    wasted_escalation=decision.wasted, costs=c,
                )
                steps.append(step)
                costs.add(c)
                if on_step is not None:
                    on_step(step)
                if final:
                    stop = "answer"
                elif cut.ends_solution:
                    stop = "eos"
                elif lim.stop_on_repeat and any(_norm(s.text) == _norm(cut.text) for s in steps[:-1]):
                    stop = "repeated_step"

            answer, rule = extract_answer(self._answer_region())
            forced = False
            if answer is None and lim.force_answer:
                step = self._force_answer(len(steps))
                steps.append(step)
                costs.add(step.costs)
                answer, rule, forced = last_boxed(step.text), "forced", True
                if on_step is not None:
                    on_step(step)
        finally:
            for s in (self.draft, self.target):
                if s is not None:
                    s.close()
        return Solution(problem=problem, steps=steps, answer=answer, answer_rule=rule, stop_reason=stop,
                        forced_answer=forced, costs=costs, wall_seconds=time.perf_counter() - t_start,
                        config=self.config)

    def _think_prompts(self, think: bool) -> None:
        """Each model's prompt, and whether the solution starts inside <think>: chat templates of
        reasoning models (DeepSeek-R1-Distill, QwQ) open it themselves in the generation prompt; with
        `think`, the others get it as the answer's prefix."""
        opener = self.segmenter.think_open
        opened = False
        for slot in (self.draft, self.target):
            if slot is None or (slot is self.draft and not self.router.needs_draft) or \
                    (slot is self.target and not self.router.needs_target):
                continue
            render = getattr(slot.backend, "render", None)
            if render is not None and render(self.prompt).rstrip().endswith(opener):
                opened = True
            elif think:
                slot.prompt = dataclasses.replace(self.prompt, prefix=opener + "\n")
        self._head = opener + "\n" if (think or opened) else ""

    def _check_context(self) -> None:
        """Refuse a prompt longer than a model's context before any prefill, naming the lengths."""
        for slot in (self.draft, self.target):
            size = getattr(slot.backend, "context_length", None) if slot is not None else None
            if not size:
                continue
            n = slot.backend.count_tokens(slot.backend.render(slot.prompt or self.prompt))  # no prefill
            if n >= size:
                raise ConfigError(f"the question is too long for {slot.backend.name}: its prompt is {n} tokens and "
                                  f"the model's context holds {size}")
            if n + self.limits.max_tokens > size:
                log.warning("prompt (%d tokens) + max_tokens (%d) exceed %s's context of %d tokens", n,
                            self.limits.max_tokens, slot.backend.name, size)

    def _answer_region(self) -> str:
        """Where the final answer is read: after </think> when the solution thinks (nothing before it
        closes), else the whole solution."""
        if not self._head:
            return self.solution_text
        close = self.segmenter.think_close
        return self.solution_text.rsplit(close, 1)[1] if close in self.solution_text else ""

    def _force_answer(self, idx: int) -> Step:
        """Budget ended without an answer: one short step from the target (the draft under
        routers that never use the target) that starts with the answer prefix."""
        slot = self.target if self.router.needs_target else self.draft
        lead = ""
        if self.solution_text and not self.solution_text.endswith(self.limits.delimiter):
            lead = self.limits.delimiter
        if self.segmenter.in_thinking(self._head + self.solution_text):
            lead += self.segmenter.think_close + "\n\n"
        self.solution_text += lead
        session = slot.ready(self.prompt, self.solution_text)
        session.append(FORCED_PREFIX)
        gen = session.generate(max_tokens=self.limits.forced_answer_tokens, stop=["\n"], temperature=0.0)
        content = FORCED_PREFIX + gen.text
        answer = last_boxed(content) or last_boxed(content.rstrip(" .$") + "}") or ""
        c = Costs()
        c.stage(slot.stage).add(gen.usage.cost())
        return Step(index=idx, text=f"The answer is \\boxed{{{answer}}}.", author=slot.stage,
                    kind="forced_answer", tokens=len(gen.token_ids), end=gen.finish_reason
                    if gen.finish_reason in ("eos", "stop") else "token_cap", costs=c)
