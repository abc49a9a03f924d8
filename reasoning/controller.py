"""The step loop, as Algorithm 1 of the Arbitrage paper: for each step the draft proposes, the router
decides, the target rewrites a rejected step, the step is committed, and the loop stops at an answer
or a budget. Sessions and the draft's step on trial live in reasoning.slots; routers and judges see
the step through reasoning.context's `StepContext` and report their calls there. The controller owns
all accounting (`_charge`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence

from reasoning import metrics
from reasoning.answers import extract_answer, last_boxed
from reasoning.backends.base import SOLVE_KEY, Backend, Generation
from reasoning.context import Candidate, Decision, Piece, Router, StepContext  # noqa: F401 (re-exported)
from reasoning.errors import ConfigError
from reasoning.options import Limits  # re-exported: the loop's budgets live in reasoning.options
from reasoning.prompts import Prompt
from reasoning.segmenter import Cut, Segmenter
from reasoning.slots import LoopContext, Sessions
from reasoning.types import Costs, Problem, Solution, SolveConfig, Step, StopReason

log = logging.getLogger(__name__)

FORCED_PREFIX = "The answer is \\boxed{"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def repeats(texts: Sequence[str], rule: str = "any") -> bool:
    """Whether the last step repeats (spaces aside) an earlier one: any earlier step, or (`consecutive`,
    as SpecReason checks: thinking models write short paragraphs such as "Wait," again and again) the one
    just before it."""
    if len(texts) < 2:
        return False
    last = _norm(texts[-1])
    return any(_norm(t) == last for t in (texts[-2:-1] if rule == "consecutive" else texts[:-1]))


# context kept free past the solution's budget: the forced answer's prefix, a <think> head, a judge's question
CONTEXT_MARGIN = 64

class Controller:
    def __init__(self, draft: Backend | None, target: Backend | None, router: Router, limits: Limits,
                 config: SolveConfig):
        if router.needs_draft and draft is None:
            raise ConfigError(f"router {router.name!r} needs a draft model")
        if router.needs_target and target is None:
            raise ConfigError(f"router {router.name!r} needs a target model")
        self.draft_backend, self.target_backend = draft, target
        self.router, self.limits, self.config = router.for_solve(), limits, config  # one solve's own router
        self.segmenter = Segmenter(limits.delimiter, limits.step_tokens, end_stops=limits.end_stops)
        self.sessions: Sessions | None = None
        self._head = ""  # "<think>\n" when the solution starts inside thinking
        self._budget = limits.max_tokens  # the solution's tokens at most (cut to the models' context)

    def run(self, problem: Problem, on_step: Callable[[Step], None] | None = None) -> Solution:
        token = SOLVE_KEY.set(uuid.uuid4().hex)  # this solve's key, for the backends' requests
        try:
            return self._run(problem, on_step)
        finally:
            SOLVE_KEY.reset(token)

    def _run(self, problem: Problem, on_step: Callable[[Step], None] | None) -> Solution:
        t_start = time.perf_counter()
        few_shot = 2 if self.limits.few_shot is None else self.limits.few_shot
        prompt = Prompt.math(problem.question, few_shot, in_user=not self.limits.system_prompt)
        self.sessions = Sessions(self.draft_backend, self.target_backend, prompt, self.limits, self.segmenter)
        self._think_prompts(self.limits.think)
        self._check_context()
        steps: list[Step] = []
        costs = Costs()
        try:
            while (stop := self._budget_stop(steps)) is None:
                ctx, c = self._context(problem, steps), Costs()
                draft_cut = self._propose(ctx, c)  # 1. the draft proposes; its step is on trial
                decision = self._route(ctx, c)  # 2. the router decides (judges report their calls)
                author, gen, cut, mark = self._rewrite(ctx, decision, draft_cut, c)  # 3. kept, or the target writes
                step = self._commit(ctx, decision, author, gen, cut, mark, c)  # 4. the step joins the solution
                steps.append(step)
                costs.add(c)
                if on_step is not None:
                    on_step(step)
                stop = self._stop(steps, cut)  # 5. an answer, the end, or a repeated step
                if stop is not None:
                    break
            answer, rule = extract_answer(self._answer_region())
            forced = False
            if answer is None and self.limits.force_answer:
                step, answer = self._force_answer(len(steps))
                steps.append(step)
                costs.add(step.costs)
                forced = True
                rule, stop = ("forced", stop) if answer is not None else (None, "no_answer")
                if on_step is not None:
                    on_step(step)
            self._charge_leftover(steps, costs)
        finally:
            self.sessions.close()
        return Solution(problem=problem, steps=steps, answer=answer, answer_rule=rule, stop_reason=stop,
                        forced_answer=forced, costs=costs, wall_seconds=time.perf_counter() - t_start,
                        config=self.config)

    def _charge_leftover(self, steps: list[Step], costs: Costs) -> None:
        """Draft work the router paid for and never used counts as thrown away, in the last step (its
        tokens and seconds are in the draft's column already, where it was paid)."""
        leftover = getattr(self.router, "leftover", None)  # routers written before it was a hook have none
        if leftover is not None and steps:
            cost = metrics.unused(leftover())
            steps[-1].costs.discarded.add(cost)
            costs.discarded.add(cost)

    # ------------------------------------------------------------------ the steps of the loop

    def _budget_stop(self, steps: list[Step]) -> StopReason | None:
        if self.limits.max_steps and len(steps) >= self.limits.max_steps:
            return "max_steps"
        if sum(s.tokens for s in steps) >= self._budget:
            return "token_budget"
        return None

    def _context(self, problem: Problem, steps: list[Step]) -> LoopContext:
        used = sum(s.tokens for s in steps)
        return LoopContext(problem, steps, step_index=len(steps),
                           in_thinking=self.segmenter.in_thinking(self._head + self.sessions.text),
                           step_cap=min(self.limits.step_tokens, self._budget - used),
                           limits=self.limits, config=self.config, sessions=self.sessions)

    def _propose(self, ctx: LoopContext, c: Costs) -> Cut | None:
        self.sessions.piece = None
        if not (self.router.needs_draft and self.router.proposes):
            return None
        gen, mark = self.sessions.generate("draft", ctx.step_index, ctx.in_thinking, ctx.step_cap)
        c.draft.add(gen.usage.cost())
        cut = self.segmenter.cut(gen)
        self.sessions.hold(gen, cut, mark)
        ctx.draft, ctx.draft_text = gen, cut.text
        return cut

    def _route(self, ctx: LoopContext, c: Costs) -> Decision:
        t0 = time.perf_counter()
        decision = self.router.route(ctx)
        keep = ctx.draft is not None and not decision.escalate and decision.step is None  # the proposal
        metrics.charge_router(c, ctx.reported, time.perf_counter() - t0, keep, calls=1)
        self.sessions.settle(keep)
        return decision

    def _rewrite(self, ctx: LoopContext, decision: Decision, draft_cut: Cut | None,
                 c: Costs) -> tuple[str, Generation, Cut, int | None]:
        """The step's author, generation and cut: the step the router already wrote, else the proposal
        (the controller's or the router's own) if kept, else the target's, written now; with where it
        starts in the target's session (None: it is not there). A proposal not committed is thrown
        away, but for the tokens a handoff step keeps."""
        mark: int | None = None
        if decision.step is not None:
            author, gen, kept = decision.step.author, decision.step.gen, decision.step.draft_tokens
        elif not decision.escalate:
            proposal = ctx.draft if ctx.draft is not None else decision.proposal
            if proposal is None:
                raise RuntimeError(f"router {self.router.name!r} kept a step that no model wrote")
            return "draft", proposal, draft_cut if proposal is ctx.draft else self.segmenter.cut(proposal), None
        else:
            author, kept = "target", 0
            gen, mark = self.sessions.generate("target", ctx.step_index, ctx.in_thinking, ctx.step_cap)
            c.target.add(gen.usage.cost())
        if ctx.draft is not None:
            c.discarded.add(metrics.thrown(ctx.draft.usage, kept if author == "target" else 0))
        if decision.step is None and self.router.reviews:
            # judges read the step after the prefix: take it out, the commit adds it back
            self.sessions.target.session.rollback(mark)
            mark = None
            n, t0 = len(ctx.reported), time.perf_counter()
            ctx.reviewing = True
            self.router.review(ctx, decision, gen)
            metrics.charge_router(c, ctx.reported[n:], time.perf_counter() - t0, keep=False, calls=0)
        return author, gen, self.segmenter.cut(gen), mark

    def _commit(self, ctx: LoopContext, decision: Decision, author: str, gen: Generation, cut: Cut,
                mark: int | None, c: Costs) -> Step:
        if gen is ctx.draft:  # kept from trial: the sessions that held it have settled
            self.sessions.commit(cut)
        else:
            self.sessions.commit(cut, author, gen, mark)
        final = self.limits.stop_on_answer and self.segmenter.is_final(cut.text, ctx.in_thinking)
        # the draft's step: its proposal, or the step a router wrote for it where it proposed none
        draft, draft_text = ctx.draft, ctx.draft_text
        if draft is None and decision.proposal is not None:
            draft = decision.proposal
            draft_text = cut.text if gen is draft else self.segmenter.cut(draft).text
        routed = draft is not None or decision.score is not None
        return Step(
            index=ctx.step_index, text=cut.text, author=author,
            kind="answer" if final else "reasoning", in_thinking=ctx.in_thinking,
            tokens=len(gen.token_ids), end=cut.end,
            draft_text=draft_text,
            draft_tokens=len(draft.token_ids) if draft is not None else 0,
            draft_stats=draft.stats() if draft is not None else None,
            handoff_tokens=decision.step.draft_tokens if decision.step is not None and author == "target" else 0,
            score=decision.score, target_score=decision.target_score,
            threshold=decision.threshold, target_load=ctx.target_load,
            decision=("escalate" if decision.escalate else "keep") if routed else None,
            wasted_escalation=decision.wasted, costs=c,
        )

    def _stop(self, steps: list[Step], cut: Cut) -> StopReason | None:
        step = steps[-1]
        if step.kind == "answer":
            return "answer"
        if cut.ends_solution:
            return "eos"
        if self.limits.stop_on_repeat and repeats([s.text for s in steps], self.limits.repeat):
            return "repeated_step"
        return None

    def _think_prompts(self, think: bool) -> None:
        """Each model's prompt, and whether the solution starts inside <think>: chat templates of
        reasoning models (DeepSeek-R1-Distill, QwQ) open it themselves in the generation prompt; with
        `think`, the others get it as the answer's prefix."""
        opener, prompt = self.segmenter.think_open, self.sessions.prompt
        opened = False
        for slot, used in ((self.sessions.draft, self.router.needs_draft),
                           (self.sessions.target, self.router.needs_target)):
            if slot is None or not used:
                continue
            render = getattr(slot.backend, "render", None)
            if render is not None and render(prompt).rstrip().endswith(opener):
                opened = True
            elif think:
                slot.prompt = dataclasses.replace(prompt, prefix=opener + "\n")
        self._head = opener + "\n" if (think or opened) else ""

    def _check_context(self) -> None:
        """Refuse a prompt longer than a model's context before any prefill, naming the lengths; a token
        budget past a model's context is cut to what the context holds (the forced answer's room kept)."""
        self._budget = self.limits.max_tokens
        for slot in (self.sessions.draft, self.sessions.target):
            size = getattr(slot.backend, "context_length", None) if slot is not None else None
            if not size:
                continue
            n = slot.backend.count_tokens(slot.backend.render(slot.prompt or self.sessions.prompt))  # no prefill
            if n >= size:
                raise ConfigError(f"the question is too long for {slot.backend.name}: its prompt is {n} tokens and "
                                  f"the model's context holds {size}")
            room = size - n - self.limits.forced_answer_tokens - CONTEXT_MARGIN
            if room < self._budget:
                log.warning("prompt (%d tokens) + max_tokens (%d) exceed %s's context of %d tokens: the budget is "
                            "%d tokens", n, self.limits.max_tokens, slot.backend.name, size, max(1, room))
                self._budget = max(1, room)

    def _answer_region(self) -> str:
        """Where the final answer is read: after </think> when the solution thinks (nothing before it
        closes), else the whole solution."""
        text = self.sessions.text
        if not self._head:
            return text
        close = self.segmenter.think_close
        return text.rsplit(close, 1)[1] if close in text else ""

    def _force_answer(self, idx: int) -> tuple[Step, str | None]:
        """Budget ended without an answer: one short step from the target (the draft under
        routers that never use the target) that starts with the answer prefix; with the answer read
        from it, None when it holds none."""
        sessions = self.sessions
        slot = sessions.target if self.router.needs_target else sessions.draft
        lead = ""
        if sessions.text and not sessions.text.endswith(self.limits.delimiter):
            lead = self.limits.delimiter
        if self.segmenter.in_thinking(self._head + sessions.text):
            lead += self.segmenter.think_close + "\n\n"
        if lead:
            sessions.add(Piece(lead))
        session = sessions.ready(slot.stage)
        session.append(FORCED_PREFIX)
        gen = session.generate(max_tokens=self.limits.forced_answer_tokens, stop=["\n"], temperature=0.0)
        content = FORCED_PREFIX + gen.text
        answer = last_boxed(content) or last_boxed(content.rstrip(" .$") + "}") or None
        c = Costs()
        c.stage(slot.stage).add(gen.usage.cost())
        step = Step(index=idx, text=f"The answer is \\boxed{{{answer or ''}}}.", author=slot.stage,
                    kind="forced_answer", tokens=len(gen.token_ids), end=gen.finish_reason
                    if gen.finish_reason in ("eos", "stop") else "token_cap", costs=c)
        return step, answer
