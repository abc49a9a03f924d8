"""Best of n (SpecCoT-style): the draft proposes n candidate steps, the judge
picks the best, and the step escalates when even the best scores below tau.

Candidates: the draft's proposal (the controller's step) and n - 1 samples at `temperature`, seeded
by `seed`, the problem and the step. A candidate equal to an earlier one is not judged again. The
kept step is the best-scored candidate (the earliest on a tie); every other candidate is charged to
the draft and counted as thrown away. tau in [0, 1]; default 0.5. Options: judge, judge_options (as
for specreason), n (>= 1, default 4), temperature (> 0, default 0.8), seed (default 0).
"""

from __future__ import annotations

import zlib
from typing import Any

from judges import Judge
from reasoning.backends.base import Generation
from reasoning.errors import ConfigError
from routers.base import Decision, StepContext
from routers.judged import JudgedRouter


class BestOfNRouter(JudgedRouter):
    name = "best-of-n"
    default_threshold = 0.5

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, n: int = 4, temperature: float = 0.8,
                 seed: int = 0):
        super().__init__(threshold, judge, judge_options)
        self.n, self.temperature, self.seed = n, temperature, seed
        if self.n < 1 or not self.temperature > 0:
            raise ConfigError("router 'best-of-n': n must be >= 1 and temperature > 0")
        self.start()

    def start(self) -> None:
        self.candidates: list[tuple[str, float]] = []  # the last step's candidates and their scores

    def _seed(self, ctx: StepContext, k: int) -> int:
        return zlib.crc32(f"{self.seed}|{ctx.problem.id}|{ctx.problem.question}|{ctx.step_index}|{k}".encode())

    def route(self, ctx: StepContext) -> Decision:
        if ctx.draft is None or ctx.draft_text is None:
            raise RuntimeError("best-of-n needs the draft's proposal")
        tau = self.effective_threshold(ctx)
        scores: dict[str, float] = {}  # by text with whitespace normalised: an equal candidate is judged once

        def judged(text: str) -> float:
            key = " ".join(text.split())
            if key not in scores:
                scores[key] = self.judge.score(ctx, text)
            return scores[key]

        self.candidates = [(ctx.draft_text, judged(ctx.draft_text))]
        best: tuple[float, Generation | None] = (self.candidates[0][1], None)
        samples: list[Generation] = []
        for k in range(1, self.n):
            gen = ctx.write_step("draft", temperature=self.temperature, seed=self._seed(ctx, k))
            text = ctx.step_text(gen)
            samples.append(gen)
            self.candidates.append((text, judged(text)))
            if self.candidates[-1][1] > best[0]:
                best = (self.candidates[-1][1], gen)
        score, chosen = best
        escalate = score < tau
        for gen in samples:
            ctx.report("draft", gen.usage, thrown_away=escalate or gen is not chosen)
        return Decision(escalate=escalate, score=score, draft=None if escalate else chosen, threshold=tau)
