"""Python API: `solve()` for one question, `Solver` to load the models once and solve many."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from reasoning.backends import check_spec, load_backend
from reasoning.batching import LOCKSTEP, run_threads
from reasoning.context import Router
from reasoning.controller import Controller
from reasoning.errors import ConfigError
from reasoning.options import DEFAULT_DRAFT, DEFAULT_ROUTER, DEFAULT_TARGET, Limits, make_limits
from reasoning.prompts import check_question
from reasoning.registry import make_router
from reasoning.specs import ModelSpec, default_few_shot, pair_of, parse_spec
from reasoning.types import Problem, Solution, SolveConfig, Step

log = logging.getLogger(__name__)


class Solver:
    """Holds the loaded draft and target models and a router; `solve()` runs one problem.

    Only the models the router needs are loaded (draft-only never loads the target)."""

    def __init__(self, draft: str | ModelSpec = DEFAULT_DRAFT, target: str | ModelSpec = DEFAULT_TARGET,
                 router: str | Router = DEFAULT_ROUTER, threshold: float | None = None,
                 router_options: dict[str, Any] | None = None, **limits: Any):
        self.draft_spec = parse_spec(draft) if isinstance(draft, str) else draft
        self.target_spec = parse_spec(target) if isinstance(target, str) else target
        if limits.get("few_shot") is None:
            limits["few_shot"] = default_few_shot(self.target_spec, self.draft_spec)
        self.limits = make_limits(**limits)
        router_options = dict(router_options or {})
        pair = pair_of(self.draft_spec, self.target_spec)
        if router == "arbitrage" and "model" not in router_options and pair is not None:
            router_options["model"] = pair  # the router shipped for the pair
        self.router = make_router(router, threshold, **router_options) if isinstance(router, str) else router
        for spec, used in ((self.draft_spec, self.router.needs_draft), (self.target_spec, self.router.needs_target)):
            if used:
                check_spec(spec)  # both models' options, before either loads
        self.draft = load_backend(self.draft_spec) if self.router.needs_draft else None
        self.target = load_backend(self.target_spec) if self.router.needs_target else None

    def config(self, limits: Limits) -> SolveConfig:
        return SolveConfig(
            draft=str(self.draft_spec), target=str(self.target_spec), router=self.router.name,
            threshold=getattr(self.router, "threshold", None), max_steps=limits.max_steps,
            max_tokens=limits.max_tokens, step_tokens=limits.step_tokens, delimiter=limits.delimiter,
            few_shot=limits.few_shot, temperature=limits.temperature, top_p=limits.top_p, top_k=limits.top_k,
            min_p=limits.min_p, seed=limits.seed, think=limits.think, system_prompt=limits.system_prompt,
            repeat=limits.repeat,
        )

    def solve(self, problem: str | Problem, on_step: Callable[[Step], None] | None = None,
              **limits: Any) -> Solution:
        if isinstance(problem, str):
            problem = Problem(question=problem)
        check_question(problem.question)
        if limits.get("few_shot", 0) is None:
            limits.pop("few_shot")
        lim = make_limits(**{**self.limits.model_dump(), **limits}) if limits else self.limits
        controller = Controller(self.draft, self.target, self.router, lim, self.config(lim))
        with LOCKSTEP.worker():  # solves running side by side batch their engine calls
            return controller.run(problem, on_step=on_step)

    def solve_many(self, problems: Sequence[str | Problem], batch_size: int = 8,
                   on_solution: Callable[[int, Solution], None] | None = None, **limits: Any) -> list[Solution]:
        """Solve problems side by side, `batch_size` at a time. On engines that batch (vLLM) each round is
        one batched draft call, one batched judge call and one batched target call for the escalated
        steps; other engines run the problems concurrently (OpenAI-compatible servers batch them
        themselves) or in turn (transformers, llama.cpp). Results come back in order; the first
        problem that failed raises its error after all others finished."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        items = list(enumerate(problems))

        def one(item: tuple[int, str | Problem]) -> Solution:
            i, problem = item
            sol = self.solve(problem, **limits)
            if on_solution is not None:
                on_solution(i, sol)
            return sol

        results = run_threads(one, items, batch_size)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results


def solve(question: str | Problem, draft: str | ModelSpec = DEFAULT_DRAFT,
          target: str | ModelSpec = DEFAULT_TARGET, router: str | Router = DEFAULT_ROUTER,
          threshold: float | None = None, on_step: Callable[[Step], None] | None = None,
          **limits: Any) -> Solution:
    """Solve one question step by step. Models are loaded once per process and reused.

    `limits` are the fields of `Limits` (reasoning.options): max_steps (0: no cap), max_tokens, step_tokens,
    temperature, top_p, top_k, min_p, seed, few_shot, think, system_prompt, repeat, ...; or a preset's
    (`reasoning.presets.read_preset("r1-distill")`)."""
    return Solver(draft, target, router, threshold, **limits).solve(question, on_step=on_step)


def solve_many(problems: Sequence[str | Problem], draft: str | ModelSpec = DEFAULT_DRAFT,
               target: str | ModelSpec = DEFAULT_TARGET, router: str | Router = DEFAULT_ROUTER,
               threshold: float | None = None, batch_size: int = 8, **limits: Any) -> list[Solution]:
    """Solve many questions side by side (see `Solver.solve_many`)."""
    return Solver(draft, target, router, threshold, **limits).solve_many(problems, batch_size=batch_size)
