"""Seeded multi-step arithmetic word problems, with a difficulty knob: the number of steps (1..8).

Each problem starts with a person holding some objects; every step is one arithmetic operation on
that count (add, subtract, multiply, or divide evenly), told as a sentence. The gold answer is the
final count, computed exactly. Every intermediate count is a positive integer, and every operand
is at least 2.

``meta["expression"]`` records the arithmetic as a fully parenthesised string of non-negative
integers and ``+ - * /`` (for example ``"((12 + 5) * 3)"``), evaluated left to right, so a check can
recompute every intermediate value without running the generator.

Problem ``i`` depends only on ``(steps, seed, i)``: ``generate(5)`` is the first five problems of
``generate(50)``.
"""

from __future__ import annotations

import random

from reasoning.errors import ConfigError
from reasoning.types import Problem

MIN_STEPS, MAX_STEPS = 1, 8
_MAX_VALUE = 5000  # keeps numbers readable: a multiplication never goes past this

_NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonah", "Kira", "Liam",
          "Maya", "Noah", "Olga", "Priya"]
_OTHERS = ["a cousin", "a neighbour", "a classmate", "the teacher", "a friend", "a younger child"]
_OBJECTS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "trading cards", "coins",
            "stamps", "beads", "toy cars"]
_CONTAINERS = ["boxes", "bags", "jars", "baskets", "piles"]

_ADD = [
    "{name} buys {k} more {obj}.",
    "{Other} gives {name} {k} {obj}.",
    "{name} finds {k} more {obj}.",
    "{name} wins {k} {obj} in a game.",
]
_SUB = [
    "{name} gives {k} {obj} to {other}.",
    "{name} loses {k} {obj}.",
    "{name} sells {k} of the {obj}.",
    "{name} uses up {k} {obj}.",
]
_MUL = [
    "Then the number of {obj} {name} has becomes {k} times as large.",
    "{name} gets more {obj} until there are {k} times as many as before.",
    "A week later, {name} has {k} times as many {obj} as before.",
]
_DIV = [
    "{name} splits the {obj} equally into {k} {box} and keeps just one of them.",
    "{name} shares the {obj} equally among {k} people, {name} included, and keeps one share.",
    "{name} divides the {obj} into {k} equal groups and keeps one group.",
]


def _check(n: int, steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ConfigError(f"synthetic steps must be an integer from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"number of synthetic problems must be at least 1, got {n!r}")


def _one(steps: int, seed: int, i: int) -> Problem:
    rng = random.Random(f"specstep-synthetic/{steps}/{seed}/{i}")  # str seeds are stable across runs
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    value = rng.randint(6, 60)
    expression = str(value)
    sentences = [f"{name} has {value} {obj}."]
    for _ in range(steps):
        ops = ["add"]
        if value >= 3:
            ops.append("sub")
        if value * 2 <= _MAX_VALUE:
            ops.append("mul")
        divisors = [k for k in range(2, 11) if value % k == 0 and k < value]
        if divisors:
            ops.append("div")
        op = rng.choice(ops)
        fill = {"name": name, "obj": obj, "other": rng.choice(_OTHERS), "box": rng.choice(_CONTAINERS)}
        if op == "add":
            k = rng.randint(2, 40)
            template, value, sign = rng.choice(_ADD), value + k, "+"
        elif op == "sub":
            k = rng.randint(2, min(value - 1, 40))
            template, value, sign = rng.choice(_SUB), value - k, "-"
        elif op == "mul":
            k = rng.randint(2, max(2, min(5, _MAX_VALUE // value)))
            template, value, sign = rng.choice(_MUL), value * k, "*"
        else:
            k = rng.choice(divisors)
            template, value, sign = rng.choice(_DIV), value // k, "/"
        fill["Other"] = fill["other"][0].upper() + fill["other"][1:]
        sentences.append(template.format(k=k, **fill))
        expression = f"({expression} {sign} {k})"
    sentences.append(f"How many {obj} does {name} have now?")
    return Problem(
        id=f"synthetic-s{steps}-{seed}-{i:04d}",
        question=" ".join(sentences),
        gold=str(value),
        meta={"benchmark": "synthetic", "answer_format": "integer", "steps": steps, "expression": expression},
    )


def generate(n: int, steps: int = 2, seed: int = 0) -> list[Problem]:
    """``n`` problems of ``steps`` operations each; the same (steps, seed) always gives the same ones."""
    _check(n, steps)
    return [_one(steps, seed, i) for i in range(n)]
