"""Prompts: a math instruction, optional few-shot examples, and two renderings: a chat template for
instruction-tuned models, a plain "Question/Answer" format for base models. A prompt may carry images
(for vision-language models); they go in the last user turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasoning.errors import ConfigError

MATH_SYSTEM = (
    "Solve the math problem step by step. Write each step as one short paragraph and separate "
    "steps with a blank line. End with the final answer in the form \\boxed{ANSWER}."
)

FEW_SHOT: list[tuple[str, str]] = [
    (
        "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
        "Tom starts with 3 * 4 = 12 apples.\n\nAfter eating 2 apples he has 12 - 2 = 10 apples.\n\n"
        "The answer is \\boxed{10}.",
    ),
    (
        "A pen costs $2 and a notebook costs $5. Sara buys 2 pens and 1 notebook. "
        "How much does she spend?",
        "The pens cost 2 * 2 = 4 dollars.\n\nThe notebook costs 5 dollars.\n\n"
        "In total she spends 4 + 5 = 9 dollars.\n\nThe answer is \\boxed{9}.",
    ),
    (
        "A train travels 60 km in one hour. How far does it travel in 3 hours and a half?",
        "In 3 hours the train travels 3 * 60 = 180 km.\n\nIn half an hour it travels 60 / 2 = 30 km.\n\n"
        "The total distance is 180 + 30 = 210 km.\n\nThe answer is \\boxed{210}.",
    ),
]

# Base models continue past the answer into a new "Question:"; stop there.
PLAIN_STOPS = ("\nQuestion:",)


@dataclass(frozen=True)
class Prompt:
    question: str
    system: str = MATH_SYSTEM
    examples: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    prefix: str = ""  # text the assistant's answer starts with (for example "<think>\n")
    in_user: bool = False  # the instruction follows the question in the user's turn (no system message)
    # PIL images, already loaded and checked (reasoning.images.load_images); left out of the hash
    images: tuple = field(default=(), hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.images, tuple):
            object.__setattr__(self, "images", tuple(self.images))

    @classmethod
    def math(cls, question: str, few_shot: int = 2, system: str = MATH_SYSTEM, prefix: str = "",
             in_user: bool = False) -> Prompt:
        if few_shot < 0 or few_shot > len(FEW_SHOT):
            from reasoning.errors import ConfigError

            raise ConfigError(f"few_shot must be between 0 and {len(FEW_SHOT)}, got {few_shot}")
        return cls(question.strip(), system, tuple(FEW_SHOT[:few_shot]), prefix, in_user)

    def messages(self) -> list[dict[str, Any]]:
        """Chat messages; with images the last user turn is content parts: the images, then the question."""
        system = self.system and not self.in_user
        msgs: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if system else []

        def ask(q: str) -> str:
            return f"{q}\n\n{self.system}" if self.in_user and self.system else q

        for q, a in self.examples:
            msgs += [{"role": "user", "content": ask(q)}, {"role": "assistant", "content": a}]
        if self.images:
            parts = [{"type": "image"} for _ in self.images] + [{"type": "text", "text": ask(self.question)}]
            msgs.append({"role": "user", "content": parts})
        else:
            msgs.append({"role": "user", "content": ask(self.question)})
        return msgs

    def plain(self, model: str | None = None) -> str:
        if self.images:
            from reasoning.errors import ConfigError

            who = f"model {model}" if model else "this model"
            raise ConfigError(f"{who} has no chat template; images need a vision-language model")
        parts = [self.system + "\n\n"] if self.system else []
        for q, a in self.examples:
            parts.append(f"Question: {q}\nAnswer:\n{a}\n\n")
        parts.append(f"Question: {self.question}\nAnswer:\n")
        return "".join(parts) + self.prefix


def check_question(question: str) -> None:
    """Refuse a question no model can read, with one line: empty, NUL characters, or not valid UTF-8
    (for example bytes that argv could not decode, kept as surrogates)."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty")
    if "\x00" in question:
        raise ConfigError(f"the question contains a NUL character (at position {question.index(chr(0))})")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(f"the question is not valid UTF-8 (undecodable byte at position {e.start}); "
                          "pass text in UTF-8") from None
