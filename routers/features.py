"""The Arbitrage router's features: one definition, used identically at training and routing time.

Every feature is computed from what exists when the router decides: the draft's proposed step
(its text and the draft's own per-token log-probabilities and entropies) and the context (the step
index, the token budget, who wrote the earlier steps). The target's step is never an input.

Three entry points compute the same vector:

- `extract_features(...)`: the pure function, from plain values;
- `features_from_context(ctx)`: at routing time, from a `StepContext`;
- `features_from_step(step, earlier, max_tokens)`: at training time, from a recorded `Step`
  (its `draft_text` and `draft_stats`) and the steps before it in the same `Solution`.

All three go through `features_from_summary`, so a trained router sees at routing time exactly the
numbers it was trained on. Every value is a finite float: an empty step has log-probability
statistics of 0, and infinite or NaN statistics are clamped (see `LOGPROB_FLOOR`).

Changing a feature, its definition or the order of `FEATURE_NAMES` changes what a trained router
means: bump `FEATURE_VERSION` with it. Router files record both, and loading refuses a file whose
names, order or version differ from this module's.

Extension point: sentence embeddings (planned, not implemented). A MiniLM-style embedding of the
draft step would be appended *after* the scalar features, as names `emb_0 .. emb_{d-1}`, with a
new FEATURE_VERSION. The embedder would be an optional argument of `extract_features` (and of
`features_from_context` / `features_from_step`), loaded once by the router from a local directory
named in the router file, and the same embedder would be used at training time. Nothing here
computes embeddings yet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reasoning.answers import has_final_answer

if TYPE_CHECKING:
    from reasoning.context import StepContext
    from reasoning.types import Step, TokenStats

FEATURE_VERSION = 1

FEATURE_NAMES: tuple[str, ...] = (
    # the draft's confidence in its own step (log p under the untempered draft distribution)
    "mean_logprob",
    "min_logprob",
    "last_logprob",
    "mean_entropy",
    # the step's size
    "n_tokens",
    "n_chars",
    # where the step is
    "step_index",
    "budget_used",  # tokens of the solution before this step / max_tokens
    # what the step does
    "n_numbers",
    "n_operators",
    "n_equals",
    "has_final_answer",  # 1.0 when the step states a final answer (reasoning.answers.has_final_answer)
    # routing history (authors of the earlier steps)
    "target_share",  # share of earlier steps written by the target (0 when there are none)
    "prev_escalated",  # 1.0 when the previous step was written by the target
    "n_prev_steps",
)

LOGPROB_FLOOR = -100.0  # log-probability statistics below this (or -inf / NaN) become this
ENTROPY_CEIL = 100.0  # entropy statistics above this (or inf) become this; NaN becomes 0

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# + * / ^ and their typeset forms, LaTeX operators, and a minus sign between operands
# (after a digit, space or ")" and before a digit, space or "("), so hyphenated words do not count.
_OPERATOR = re.compile(r"\\(?:times|cdot|div|frac)(?![A-Za-z])|[+*/^×÷·−]|(?<=[\d\s)])-(?=[\s\d(])")

# (n_tokens, mean_logprob, min_logprob, last_logprob, mean_entropy); None for an empty step
Summary = tuple[int, float, float, float, float]


def token_summary(logprobs: Sequence[float], entropies: Sequence[float]) -> Summary | None:
    """The same statistics as `Generation.stats()` (and `Step.draft_stats`), computed the same way."""
    if not logprobs:
        return None
    n = len(logprobs)
    mean_entropy = sum(entropies) / len(entropies) if entropies else math.nan
    return n, sum(logprobs) / n, min(logprobs), logprobs[-1], mean_entropy


def _logprob(x: float) -> float:
    x = float(x)
    return LOGPROB_FLOOR if math.isnan(x) or x < LOGPROB_FLOOR else min(x, 0.0)


def _entropy(x: float) -> float:
    x = float(x)
    return 0.0 if math.isnan(x) else min(max(x, 0.0), ENTROPY_CEIL)


def features_from_summary(draft_text: str, summary: Summary | None, step_index: int, tokens_used: int,
                          max_tokens: int, history: Sequence[str]) -> list[float]:
    """The feature vector (in FEATURE_NAMES order) from a token summary (see `token_summary`)."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if summary is None:
        n_tokens, mean_lp, min_lp, last_lp, mean_ent = 0, 0.0, 0.0, 0.0, 0.0
    else:
        n_tokens, mean_lp, min_lp, last_lp, mean_ent = summary
    n_prev = len(history)
    by_target = sum(1 for a in history if a == "target")
    values = [
        _logprob(mean_lp),
        _logprob(min_lp),
        _logprob(last_lp),
        _entropy(mean_ent),
        float(n_tokens),
        float(len(draft_text)),
        float(step_index),
        float(tokens_used) / float(max_tokens),
        float(len(_NUMBER.findall(draft_text))),
        float(len(_OPERATOR.findall(draft_text))),
        float(draft_text.count("=")),
        1.0 if has_final_answer(draft_text) else 0.0,
        by_target / n_prev if n_prev else 0.0,
        1.0 if n_prev and history[-1] == "target" else 0.0,
        float(n_prev),
    ]
    assert len(values) == len(FEATURE_NAMES)
    return values


def extract_features(draft_text: str, logprobs: Sequence[float], entropies: Sequence[float], step_index: int,
                     tokens_used: int, max_tokens: int, history: list[str]) -> list[float]:
    """The feature vector of one draft step, in FEATURE_NAMES order.

    draft_text: the proposed step (delimiter removed); logprobs / entropies: the draft's per-token
    values for the step (`Generation.logprobs` / `.entropies`); step_index: the step's index in the
    solution; tokens_used: tokens of the solution before this step; max_tokens: the solution's token
    budget; history: the authors ("draft" / "target") of the earlier steps, in order."""
    return features_from_summary(draft_text, token_summary(logprobs, entropies), step_index, tokens_used,
                                 max_tokens, history)


def features_from_context(ctx: StepContext) -> list[float]:
    """The feature vector at routing time: the draft's proposal in `ctx` and the steps before it."""
    if ctx.draft is None or ctx.draft_text is None:
        raise RuntimeError("router features need the draft's proposed step (the router must set needs_draft)")
    return extract_features(
        ctx.draft_text, ctx.draft.logprobs, ctx.draft.entropies, ctx.step_index,
        sum(s.tokens for s in ctx.steps), ctx.limits.max_tokens, [s.author for s in ctx.steps],
    )


def _summary_of(stats: TokenStats | None) -> Summary | None:
    if stats is None:
        return None
    return stats.n_tokens, stats.mean_logprob, stats.min_logprob, stats.last_logprob, stats.mean_entropy


def features_from_step(step: Step, earlier: Sequence[Step], max_tokens: int) -> list[float]:
    """The feature vector of a recorded draft-proposed step (training time): `step` is a step of a
    `Solution` whose `draft_text` is set, `earlier` the solution's steps before it, `max_tokens` the
    solve's token budget (`Solution.config.max_tokens`). Equal to what `features_from_context` gave
    when the step was routed."""
    if step.draft_text is None:
        raise ValueError(f"step {step.index} has no draft proposal (written without a draft step)")
    return features_from_summary(step.draft_text, _summary_of(step.draft_stats), step.index,
                                 sum(s.tokens for s in earlier), max_tokens, [s.author for s in earlier])


__all__ = [
    "ENTROPY_CEIL", "FEATURE_NAMES", "FEATURE_VERSION", "LOGPROB_FLOOR", "extract_features",
    "features_from_context", "features_from_step", "features_from_summary", "token_summary",
]
