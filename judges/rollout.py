"""Monte-Carlo step value: from the prefix plus the step, k draft rollouts to an answer; the score is
the share that reaches the gold answer (without gold: the share that agrees with the majority)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from judges.base import on_trial, rendered
from reasoning.answers import answers_match, extract_answer
from reasoning.errors import ConfigError

if TYPE_CHECKING:
    from reasoning.context import StepContext


class RolloutJudge:
    name = "rollout"

    def __init__(self, k: int | str = 4, tokens: int | str = 192, temperature: float | str = 0.7,
                 seed: int | str = 0, model: str = "draft"):
        try:
            self.k, self.tokens, self.seed = int(k), int(tokens), int(seed)
            self.temperature = float(temperature)
        except ValueError as e:
            raise ConfigError(f"judge 'rollout': bad option value ({e})") from None
        if self.k < 1 or self.tokens < 1 or self.temperature < 0:
            raise ConfigError("judge 'rollout': k and tokens must be >= 1 and temperature >= 0")
        if model not in ("draft", "target"):
            raise ConfigError(f"judge 'rollout': model must be 'draft' or 'target', got {model!r}")
        self.model = model

    def rollout_answers(self, ctx: StepContext, step_text: str) -> list[str | None]:
        if on_trial(ctx, step_text):
            session = ctx.session(self.model, with_draft_step=True)
            mark = None
        else:  # read the same way as on trial
            session = ctx.session(self.model)
            mark = session.n_tokens
            session.append(rendered(ctx, step_text))
        start = session.n_tokens
        try:
            answers = []
            for i in range(self.k):
                g = session.generate(max_tokens=self.tokens, stop=list(ctx.limits.end_stops),
                                     temperature=self.temperature,
                                     seed=self.seed * 1_000_003 + ctx.step_index * 101 + i)
                ctx.report("judge", g.usage)
                answers.append(extract_answer(step_text + "\n\n" + g.text, last_number=True)[0])
                session.rollback(start)
        finally:
            session.rollback(start if mark is None else mark)
        return answers

    def score(self, ctx: StepContext, step_text: str) -> float:
        answers = self.rollout_answers(ctx, step_text)
        gold = ctx.problem.gold
        if gold is not None:
            return sum(a is not None and answers_match(a, gold) for a in answers) / len(answers)
        found = [a for a in answers if a is not None]
        if not found:
            return 0.0
        majority, _ = Counter(found).most_common(1)[0]
        return sum(answers_match(a, majority) for a in found) / len(answers)
