"""Where a step ends, and when a solution is finished.

A step is the text up to a delimiter (default a blank line) or a token cap. Inside a reasoning
model's ``<think>`` ... ``</think>`` block, ``</think>`` also ends a step; steps after it belong to
the answer. A solution stops at a final answer (outside thinking), end of sequence, a step
repeated verbatim, or a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning.answers import has_final_answer
from reasoning.backends.base import Generation
from reasoning.options import DEFAULT_LIMITS
from reasoning.types import StepEnd


@dataclass(frozen=True)
class Cut:
    piece: str  # exact text this step adds to the solution (delimiter included)
    text: str  # the step as shown and recorded
    end: StepEnd
    ends_solution: bool  # end of sequence or an extra stop string: nothing more will follow


@dataclass(frozen=True)
class Segmenter:
    delimiter: str = DEFAULT_LIMITS.delimiter
    step_tokens: int = DEFAULT_LIMITS.step_tokens
    think_open: str = "<think>"
    think_close: str = "</think>"
    end_stops: tuple[str, ...] = ()  # strings that end the whole solution (a base model's "\nQuestion:")

    def in_thinking(self, text: str) -> bool:
        return text.count(self.think_open) > text.count(self.think_close)

    def stops(self, thinking: bool) -> list[str]:
        return [self.delimiter, *([self.think_close] if thinking else []), *self.end_stops]

    def cut(self, gen: Generation) -> Cut:
        t = gen.text
        if gen.finish_reason == "stop" and gen.stop in self.end_stops:
            body = t[: len(t) - len(gen.stop)]
            return Cut(body, body.strip(), "stop", True)
        if gen.finish_reason == "eos":
            return Cut(t, t.strip(), "eos", True)
        if gen.finish_reason == "stop" and gen.stop == self.delimiter:
            return Cut(t, t[: len(t) - len(self.delimiter)].strip(), "delimiter", False)
        if gen.finish_reason == "stop" and gen.stop == self.think_close:
            return Cut(t + self.delimiter, t.strip(), "think_end", False)
        return Cut(t + self.delimiter, t.strip(), "token_cap", False)

    @staticmethod
    def is_final(step_text: str, thinking: bool) -> bool:
        return not thinking and has_final_answer(step_text)
