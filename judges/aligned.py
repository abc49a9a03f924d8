"""Whether two steps say the same: Lookahead Reasoning's verifier (hao-ai-lab/LookaheadReasoning, src/lr.py).

Two steps whose text is equal once spaces and newlines are removed and case is folded are the same
(score 1, no model call). Otherwise a model (by default the target) reads both in a fresh prompt, the
repository's: are they aligned or unaligned in meaning and results, answering after "[". The score is
the probability of "aligned" against "unaligned" at that token (the repository reads one greedy token:
aligned when the score is above 0.5). `model=none` stops at the exact comparison.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from reasoning.errors import ConfigError
from reasoning.prompts import Prompt

if TYPE_CHECKING:
    from reasoning.context import StepContext

ALIGNED_PROMPT = (
    "Evaluate whether the following two reasoning steps (s1 and s2) convey exactly the same meaning. Focus on "
    "semantic similarity rather than exact wording.\n\nCompare the main ideas, key points, overall message, "
    "logical structure, and numerical calculations/results of both reasoning steps.\n\nIf the reasoning steps "
    "convey essentially the same meaning and generate same calculation results, respond with [aligned].\nIf the "
    "reasoning steps express different meanings, respond with [unaligned]. If it is too hard to determine, "
    "respond with [unaligned]\n\nPlease directly provide the final result in [aligned] or [unaligned].\n\n"
    "Reasoning step 1 (s1):\n<start_s1>\n{}\n<end_s1>\n\nReasoning step 2 (s2):\n<start_s2>\n{}\n<end_s2>"
)
MODELS = ("target", "draft", "none")


def exactly_same(a: str, b: str) -> bool:
    """The repository's exact comparison: equal without spaces and newlines, case folded."""
    def norm(s: str) -> str:
        return s.replace(" ", "").replace("\n", "").lower()

    return norm(a) == norm(b)


class AlignedJudge:
    """Scores in [0, 1] how surely two steps say the same; reports its calls as the judge's."""

    name = "aligned"

    def __init__(self, model: str = "target"):
        if model not in MODELS:
            raise ConfigError(f"verifier model must be one of {', '.join(map(repr, MODELS))}, got {model!r}")
        self.model = model

    def score(self, ctx: StepContext, draft_step: str, target_step: str) -> float:
        if exactly_same(draft_step, target_step):
            return 1.0
        if self.model == "none":
            return 0.0
        backend = ctx.backend(self.model)
        first = []
        for word in ("aligned", "unaligned"):  # the token each answer starts with, after "["
            encode = getattr(backend, "encode", None)
            first.append(backend.decode(encode(word)[:1]) if encode is not None else word)
        if first[0] == first[1]:
            raise ConfigError(f"{backend.name}: 'aligned' and 'unaligned' start with the same token")
        session = backend.open_session(Prompt(ALIGNED_PROMPT.format(draft_step.strip(), target_step.strip()),
                                              system="", prefix="["))
        try:
            logprobs, usage = session.next_token_logprobs(first)
        finally:
            session.close()
        ctx.report("judge", usage)
        a, u = (math.exp(logprobs[w]) for w in first)
        return a / (a + u) if a + u > 0 else 0.0


__all__ = ["ALIGNED_PROMPT", "AlignedJudge", "exactly_same"]
