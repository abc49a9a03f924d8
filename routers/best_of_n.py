"""Best of n (SpecCoT, Shi et al., Findings of EMNLP 2025, "Accelerating Chain-of-Thought Reasoning
through Speculative Exploration"): the draft proposes n candidate steps and the target, in one call,
selects the most suitable one or rejects them all and writes the step itself.

Candidates: the draft's proposal (the controller's step) and n - 1 samples at `temperature`, seeded
by `seed`, the problem and the step; a candidate equal to an earlier one is listed once.

select=target (the paper's, the default): the target reads the numbered candidates after the solution
so far and is asked for the number of the correct next step, 0 for none; one forward pass reads its
distribution over "0".."n" (n <= 9). The step's score is the chosen candidate's probability,
renormalised over those answers; it escalates when 0 is the most likely answer or the score is below
tau (tau in [0, 1]; default 0: the paper's select-or-reject).
select=judge (per-candidate judging): the judge scores each candidate as specreason does, the
best-scored is kept (the earliest on a tie), and the step escalates when even the best scores below
tau (default 0.5 for this option's sweeps, as before).

Every candidate not kept is charged to the draft and counted as thrown away. Options: select
(target | judge), judge, judge_options (as for specreason), n (>= 1, default 4), temperature (> 0,
default 0.8), seed (default 0).
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any, Literal

from judges import Judge
from judges.base import report_judging
from reasoning.backends.base import Generation
from reasoning.errors import ConfigError
from routers.base import Candidate, Decision, StepContext
from routers.judged import JudgedRouter

SELECT_INSTRUCTION = ("Which candidate is the correct next step? Answer with its number, or 0 if none of them "
                      "is correct.")
CHOICE_PREFIX = "Choice: "


def _kept(escalate: bool, chosen: Generation | None) -> Candidate | None:
    """The step to commit: a chosen sample (None: the proposal, or the target's step on escalation)."""
    return Candidate("draft", chosen) if chosen is not None and not escalate else None


class BestOfNRouter(JudgedRouter):
    name = "best-of-n"
    default_threshold = 0.0

    def __init__(self, threshold: float | None = None, judge: str | Judge | None = None,
                 judge_options: dict[str, Any] | None = None, n: int = 4, temperature: float = 0.8,
                 seed: int = 0, select: Literal["target", "judge"] = "target"):
        if select not in ("target", "judge"):
            raise ConfigError(f"router 'best-of-n': select must be 'target' or 'judge', got {select!r}")
        if threshold is None and select == "judge":
            threshold = 0.5
        super().__init__(threshold, judge, judge_options)
        self.n, self.temperature, self.seed, self.select = n, temperature, seed, select
        if self.n < 1 or not self.temperature > 0:
            raise ConfigError("router 'best-of-n': n must be >= 1 and temperature > 0")
        if select == "target" and self.n > 9:
            raise ConfigError(f"router 'best-of-n': select=target lists at most 9 candidates, got n={n}")
        self.start()

    def start(self) -> None:
        self.candidates: list[tuple[str, float]] = []  # the last step's candidates and their scores

    def _seed(self, ctx: StepContext, k: int) -> int:
        return zlib.crc32(f"{self.seed}|{ctx.problem.id}|{ctx.problem.question}|{ctx.step_index}|{k}".encode())

    def route(self, ctx: StepContext) -> Decision:
        if ctx.draft is None or ctx.draft_text is None:
            raise RuntimeError("best-of-n needs the draft's proposal")
        if self.select == "target":
            return self._selected(ctx)
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
        return Decision(escalate=escalate, score=score, step=_kept(escalate, chosen), threshold=tau)

    def _selected(self, ctx: StepContext) -> Decision:
        """SpecCoT's selection: the target picks one of the candidates, or none, in one call."""
        tau = self.effective_threshold(ctx)
        texts, gens = [ctx.draft_text], [None]  # distinct candidates; None: the proposal
        samples: list[Generation] = []
        for k in range(1, self.n):
            gen = ctx.write_step("draft", temperature=self.temperature, seed=self._seed(ctx, k))
            samples.append(gen)
            text = ctx.step_text(gen)
            if all(" ".join(text.split()) != " ".join(t.split()) for t in texts):
                texts.append(text)
                gens.append(gen)
        probs = self._choose(ctx, texts)
        best = max(range(1, len(texts) + 1), key=lambda i: probs[i])
        score = probs[best]
        escalate = probs[0] > score or score < tau
        chosen = None if escalate else gens[best - 1]
        self.candidates = [(t, probs[i]) for i, t in enumerate(texts, 1)]
        for gen in samples:
            ctx.report("draft", gen.usage, thrown_away=escalate or gen is not chosen)
        return Decision(escalate=escalate, score=score, step=_kept(escalate, chosen), threshold=tau)

    def _choose(self, ctx: StepContext, texts: list[str]) -> list[float]:
        """The target's probabilities of answering 0 (none) and 1..len(texts), renormalised over those."""
        backend, session = ctx.backend("target"), ctx.session("target")
        listing = "\n".join(f"({i}) {t.strip()}" for i, t in enumerate(texts, 1))
        ask = f"Candidate next steps:\n{listing}\n{SELECT_INSTRUCTION}"
        markers = backend.turn_markers()
        suffix = (f"\n\n[{ask}]\n" if markers is None else f"{markers[0]}{ask}{markers[1]}") + CHOICE_PREFIX
        answers = [str(i) for i in range(len(texts) + 1)]
        t0 = time.perf_counter()
        mark = session.n_tokens
        session.append(suffix)
        try:
            logprobs, usage = session.next_token_logprobs(answers)
        finally:
            session.rollback(mark)
        usage.seconds = time.perf_counter() - t0
        report_judging(ctx, "target", usage, backend.count_tokens(suffix))
        probs = [math.exp(logprobs[a]) for a in answers]
        total = sum(probs) or 1.0
        return [p / total for p in probs]
