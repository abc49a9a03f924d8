"""Seeded multi-step arithmetic word problems with gold step-by-step solutions: the testbed's task.

Each problem starts with a person holding some objects; every step is one arithmetic operation on
that count (add, subtract, multiply, or divide evenly), told as a sentence. The gold answer is the
final count, computed exactly. Every intermediate count is a positive integer below 1000, and
every operand is at least 2. The number of steps (1..8) sets the difficulty of a problem; the
operation sets the difficulty of a step: small additions and subtractions are easy, multiplications
and divisions (written out digit by digit) and carries are hard.

``meta["expression"]`` records the arithmetic as a fully parenthesised string of non-negative
integers and ``+ - * /`` (for example ``"((12 + 5) * 3)"``), evaluated left to right, so a check can
recompute every intermediate value without running the generator. :func:`gold_steps` turns it into
the gold solution (one step a paragraph, then ``The answer is \\boxed{N}.``), :func:`check_step`
grades a written step exactly, and :func:`corrupt_step` makes a wrong twin of a gold step (wrong
arithmetic or a wrong operand) for judge training and tests.

Two styles of gold step (``STYLES``): ``short`` writes additions and subtractions in one go
(``53 - 27 = 26.``); ``written`` splits a carry or a borrow at the next ten of the operand
(``53 - 27 = 53 - 30 + 3 = 23 + 3 = 26.``) and writes a quotient past ten as a long division
(``756 / 9: 75 = 9 * 8 + 3, 36 = 9 * 4, so 756 / 9 = 84.``). A step is right in either style.

Splits: a question belongs to ``train``, ``val`` or ``test`` by a hash of its text (80/10/10), so the
splits are disjoint for every seed and step count. Problem ``i`` of a split depends only on
``(steps, seed, split, i)``: ``generate(5)`` is the first five problems of ``generate(50)``.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from reasoning.errors import ConfigError
from reasoning.types import Problem

MIN_STEPS, MAX_STEPS = 1, 8
SPLITS = ("train", "val", "test")
# how gold steps are written: "short" (additions and subtractions in one go; the shipped v1 pair) or
# "written" (carries, borrows and long divisions written out in carry-free parts)
STYLES = ("short", "written")
_MAX_VALUE = 999  # every intermediate count stays below 1000

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


def _check(n: int, steps: int, split: str) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ConfigError(f"synthetic steps must be an integer from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"number of synthetic problems must be at least 1, got {n!r}")
    if split not in SPLITS:
        raise ConfigError(f"synthetic split must be one of {', '.join(SPLITS)}, got {split!r}")


def split_of(question: str) -> str:
    """The split a question belongs to (80% train, 10% val, 10% test), from a hash of its text."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


# --------------------------------------------------------------------------- one operation


@dataclass(frozen=True)
class Op:
    """One step of a problem: ``a sign k = result``."""

    a: int
    sign: str
    k: int

    @property
    def result(self) -> int:
        return {"+": self.a + self.k, "-": self.a - self.k, "*": self.a * self.k, "/": self.a // self.k}[self.sign]

    @property
    def hard(self) -> bool:
        """Multiplications and divisions of numbers past 10, and additions or subtractions with a carry."""
        if self.sign in "*/":
            return self.a >= 10 and self.result >= 10 if self.sign == "/" else self.a >= 10
        if self.sign == "+":
            return (self.a % 10) + (self.k % 10) >= 10
        return (self.a % 10) < (self.k % 10)

    def text(self, result: int | None = None, style: str = "short") -> str:
        """The gold step in `style` (see STYLES); `result` replaces the final value (a corruption)."""
        r = self.result if result is None else result
        a, k = self.a, self.k
        if self.sign == "*" and a >= 10 and a % 10:
            tens, ones = a - a % 10, a % 10
            return f"{a} * {k} = {tens} * {k} + {ones} * {k} = {tens * k} + {ones * k} = {r}."
        if self.sign == "/":
            q = self.result
            if style == "written" and q >= 10:  # long division: the tens digit, its remainder, the ones digit
                lead, rem = divmod(a // 10, k)
                return (f"{a} / {k}: {a // 10} = {k} * {lead} + {rem}, {rem * 10 + a % 10} = {k} * {q % 10}, "
                        f"so {a} / {k} = {r}.")
            if q >= 10 and q % 10:
                tens, ones = q - q % 10, q % 10
                return f"{a} / {k} = {tens * k} / {k} + {ones * k} / {k} = {tens} + {ones} = {r}."
        if style == "written" and self.sign in "+-" and self.hard:
            # a carry or a borrow: go to the next ten of k and back, so neither part carries in its ones
            up = k + 10 - k % 10
            back, first = up - k, (a + up if self.sign == "+" else a - up)
            undo = "-" if self.sign == "+" else "+"
            return f"{a} {self.sign} {k} = {a} {self.sign} {up} {undo} {back} = {first} {undo} {back} = {r}."
        return f"{a} {self.sign} {k} = {r}."


_EXPR = re.compile(r"\(|\)")


def operations(problem: Problem) -> list[Op]:
    """The problem's operations, recomputed from ``meta["expression"]``."""
    expr = problem.meta.get("expression")
    if not isinstance(expr, str):
        raise ConfigError(f"problem {problem.id or problem.question[:40]!r} is not a synthetic problem")
    tokens = _EXPR.sub(" ", expr).split()
    value, ops = int(tokens[0]), []
    for sign, k in zip(tokens[1::2], tokens[2::2]):
        op = Op(value, sign, int(k))
        ops.append(op)
        value = op.result
    return ops


def answer_step(value: int | str) -> str:
    return f"The answer is \\boxed{{{value}}}."


def _style(style: str) -> str:
    if style not in STYLES:
        raise ConfigError(f"synthetic step style must be one of {', '.join(STYLES)}, got {style!r}")
    return style


def gold_steps(problem: Problem, style: str = "short") -> list[str]:
    """The gold solution in `style`: one step per operation, then the answer step."""
    ops, style = operations(problem), _style(style)
    return [op.text(style=style) for op in ops] + [answer_step(ops[-1].result if ops else problem.gold)]


def gold_solution(problem: Problem, delimiter: str = "\n\n", style: str = "short") -> str:
    return delimiter.join(gold_steps(problem, style))


def step_difficulty(problem: Problem) -> list[str]:
    """"hard" or "easy" for each gold step (the answer step is easy)."""
    return ["hard" if op.hard else "easy" for op in operations(problem)] + ["easy"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip()


def check_step(problem: Problem, index: int, text: str) -> bool:
    """Whether `text` is exactly gold step `index` in one of the STYLES (whitespace and a final period
    aside)."""
    return any(0 <= index < len(gold) and _norm(text) == _norm(gold[index])
               for gold in (gold_steps(problem, style) for style in STYLES))


CORRUPTIONS = ("arithmetic", "operand", "previous")


def corrupt_step(problem: Problem, index: int, rng: random.Random, kind: str | None = None,
                 style: str = "short") -> tuple[str, str]:
    """A wrong twin of gold step `index` (in `style`) and the kind of error: ``arithmetic`` (the result
    is off), ``operand`` (the right arithmetic on a wrong operand) or ``previous`` (it starts from a
    wrong count). The answer step gets a wrong boxed value (kind ``arithmetic``)."""
    ops, style = operations(problem), _style(style)
    if kind is not None and kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}: use one of {', '.join(CORRUPTIONS)}")
    if index == len(ops):
        value = ops[-1].result if ops else int(problem.gold or 0)
        return answer_step(_off(value, rng)), "arithmetic"
    op = ops[index]
    kind = kind or rng.choice(CORRUPTIONS)
    if kind == "arithmetic":
        return op.text(result=_off(op.result, rng), style=style), kind
    for _ in range(100):
        if kind == "operand":
            bad = Op(op.a, op.sign, _off(op.k, rng, small=True))
        else:
            bad = Op(_off(op.a, rng), op.sign, op.k)
        if bad.k >= 1 and bad.a >= 1 and bad.result >= 0 and (op.sign != "/" or bad.a % bad.k == 0) \
                and bad != op:
            return bad.text(style=style), kind
    return op.text(result=_off(op.result, rng), style=style), "arithmetic"


def _off(value: int, rng: random.Random, small: bool = False) -> int:
    """A positive integer near `value` but not equal to it (a plausible slip)."""
    deltas = [1, 2, 3] if small else [1, 2, 3, 9, 10, 11, 20, 100]
    for _ in range(100):
        out = value + rng.choice(deltas) * rng.choice((-1, 1))
        if out > 0 and out != value:
            return out
    return value + 1


# --------------------------------------------------------------------------- problems


def _candidate(steps: int, seed: int, j: int) -> tuple[str, str, int]:
    rng = random.Random(f"specstep-synthetic/{steps}/{seed}/{j}")  # str seeds are stable across runs
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    value = rng.randint(6, 60)
    expression = str(value)
    sentences = [f"{name} has {value} {obj}."]
    for _ in range(steps):
        ops = []
        if value + 2 <= _MAX_VALUE:
            ops.append("add")
        if value >= 3:
            ops.append("sub")
        if value <= 99 and value * 2 <= _MAX_VALUE:
            ops.append("mul")
        divisors = [k for k in range(2, 10) if value % k == 0 and k < value and value // k <= 99]
        if divisors:
            ops.append("div")
        op = rng.choice(ops)
        fill = {"name": name, "obj": obj, "other": rng.choice(_OTHERS), "box": rng.choice(_CONTAINERS)}
        if op == "add":
            k = rng.randint(2, min(40, _MAX_VALUE - value))
            template, value, sign = rng.choice(_ADD), value + k, "+"
        elif op == "sub":
            k = rng.randint(2, min(value - 1, 40))
            template, value, sign = rng.choice(_SUB), value - k, "-"
        elif op == "mul":
            k = rng.randint(2, max(2, min(9, _MAX_VALUE // value)))
            template, value, sign = rng.choice(_MUL), value * k, "*"
        else:
            k = rng.choice(divisors)
            template, value, sign = rng.choice(_DIV), value // k, "/"
        fill["Other"] = fill["other"][0].upper() + fill["other"][1:]
        sentences.append(template.format(k=k, **fill))
        expression = f"({expression} {sign} {k})"
    sentences.append(f"How many {obj} does {name} have now?")
    return " ".join(sentences), expression, value


def generate(n: int, steps: int = 2, seed: int = 0, split: str = "test") -> list[Problem]:
    """``n`` problems of ``steps`` operations each from one split; the same arguments always give the
    same problems. Ids are ``synthetic-s{steps}-{seed}-{i}`` for the test split and
    ``synthetic-{split}-s{steps}-{seed}-{i}`` for the others."""
    _check(n, steps, split)
    out: list[Problem] = []
    j = 0
    while len(out) < n:
        question, expression, value = _candidate(steps, seed, j)
        j += 1
        if split_of(question) != split:
            continue
        tag = "" if split == "test" else f"{split}-"
        p = Problem(
            id=f"synthetic-{tag}s{steps}-{seed}-{len(out):04d}",
            question=question,
            gold=str(value),
            meta={"benchmark": "synthetic", "answer_format": "integer", "steps": steps, "expression": expression,
                  "split": split},
        )
        out.append(p)
    return out
