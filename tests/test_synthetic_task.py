"""The testbed task: gold step-by-step solutions, exact step checks, corruptions, disjoint splits."""

import random
import re

import pytest

from eval.synthetic import (
    SPLITS,
    STYLES,
    Op,
    check_step,
    corrupt_step,
    generate,
    gold_solution,
    gold_steps,
    operations,
    split_of,
    step_difficulty,
)
from reasoning.answers import extract_answer
from reasoning.errors import ConfigError


def _arith(step: str) -> int:
    """Evaluate every 'x op y = ...' chain of a gold step and return its final value, checking each '='."""
    parts = [p.strip().rstrip(".") for p in step.split("=")]
    values = [eval(p, {"__builtins__": {}}) for p in parts]  # digits and + - * / only (checked below)
    assert all(re.fullmatch(r"[\d +\-*/]+", p) for p in parts), step
    assert all(abs(v - values[-1]) < 1e-9 for v in values), step
    return int(values[-1])


def _written_division(step: str, op: Op) -> int:
    """Check a long division 'a / k: A = k * t + r, B = k * o, so a / k = q.' clause by clause."""
    m = re.fullmatch(r"(\d+) / (\d+): (\d+) = (\d+) \* (\d+) \+ (\d+), (\d+) = (\d+) \* (\d+), so \1 / \2 = (\d+)\.",
                     step)
    assert m, step
    a, k, lead, k1, t, r, rest, k2, o, q = map(int, m.groups())
    assert (a, k) == (op.a, op.k) == (a, k1) == (a, k2) and lead == a // 10 and lead == k * t + r and r < k
    assert rest == 10 * r + a % 10 == k * o and q == 10 * t + o
    return q


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_gold_steps_compute_the_gold_answer(steps, style):
    for p in generate(40, steps=steps, seed=2):
        gold = gold_steps(p, style)
        assert len(gold) == steps + 1
        value = None
        for op, text in zip(operations(p), gold):
            assert text.startswith(f"{op.a} {op.sign} {op.k}")
            assert value is None or op.a == value  # each step starts from the previous count
            value = _written_division(text, op) if ":" in text else _arith(text)
            assert check_step(p, gold.index(text), text)  # either style is a right step
        assert str(value) == p.gold
        assert gold[-1] == f"The answer is \\boxed{{{p.gold}}}."
        assert extract_answer(gold_solution(p, style=style))[0] == p.gold
        assert all(0 < op.result < 1000 for op in operations(p))


def test_the_written_style_leaves_no_carry_in_the_ones():
    """Every addition or subtraction with a carry or a borrow goes to k's next ten and back, so neither
    part carries in its ones; a division past ten is written as a long division."""
    ops = [op for p in generate(300, steps=3, seed=0, split="train") for op in operations(p)]
    hard = [op for op in ops if op.sign in "+-" and op.hard]
    assert len(hard) > 50
    for op in hard:
        a, sign, up, undo, back = op.text(style="written").split(" = ")[1].split()
        first = int(a) + int(up) if sign == "+" else int(a) - int(up)
        assert int(up) % 10 == 0 and int(up) > op.k and int(back) == int(up) - op.k
        assert first % 10 == int(a) % 10 and first >= 0  # a multiple of ten leaves the ones alone
        assert (first % 10 - int(back) >= 0) if undo == "-" else (first % 10 + int(back) < 10)
    assert Op(53, "-", 27).text(style="written") == "53 - 27 = 53 - 30 + 3 = 23 + 3 = 26."
    assert Op(48, "+", 7).text(style="written") == "48 + 7 = 48 + 10 - 3 = 58 - 3 = 55."
    assert Op(756, "/", 9).text(style="written") == "756 / 9: 75 = 9 * 8 + 3, 36 = 9 * 4, so 756 / 9 = 84."
    easy = [op for op in ops if not op.hard and op.sign in "+-" or op.sign == "/" and op.result < 10]
    assert easy and all(op.text(style="written") == op.text() for op in easy)  # the rest as in the short style
    with pytest.raises(ConfigError, match="step style must be one of short, written, got 'long'"):
        gold_steps(generate(1)[0], "long")


def test_steps_vary_in_difficulty():
    kinds = [k for p in generate(200, steps=3, seed=0) for k in step_difficulty(p)[:-1]]
    assert 0.25 < kinds.count("hard") / len(kinds) < 0.75
    # a multiplication of a two-digit number is written out and counts as hard
    ops = [op for p in generate(200, steps=3, seed=0) for op in operations(p)]
    mul = next(op for op in ops if op.sign == "*" and op.a >= 10 and op.a % 10)
    assert op_text_parts(mul.text()) == 4 and mul.hard


def op_text_parts(text: str) -> int:
    return text.count("=") + 1


def test_check_step_is_exact():
    p = generate(1, steps=3, seed=0)[0]
    gold = gold_steps(p)
    for i, g in enumerate(gold):
        assert check_step(p, i, g)
        assert check_step(p, i, "  " + g.rstrip(".") + "  ")  # whitespace and a final period aside
        assert not check_step(p, (i + 1) % len(gold), g) or gold[(i + 1) % len(gold)] == g
    assert not check_step(p, len(gold), gold[0])


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", ["arithmetic", "operand", "previous"])
def test_corruptions_are_wrong_and_plausible(kind, style):
    rng = random.Random(0)
    for p in generate(30, steps=3, seed=1):
        for i in range(3):
            bad, got = corrupt_step(p, i, rng, kind, style=style)
            assert got in ("arithmetic", kind)
            assert not check_step(p, i, bad)
            assert bad.count("=") == gold_steps(p, style)[i].count("=") or got != "arithmetic"
            if got in ("operand", "previous") and ":" not in bad:  # right arithmetic on a wrong number
                _arith(bad)
        bad, got = corrupt_step(p, 3, rng)
        assert got == "arithmetic" and not check_step(p, 3, bad) and "\\boxed{" in bad


def test_splits_are_disjoint_and_seeded():
    qs = {s: {p.question for p in generate(150, steps=2, seed=0, split=s)} for s in SPLITS}
    assert all(len(v) == 150 for v in qs.values())
    assert not (qs["train"] & qs["val"]) and not (qs["train"] & qs["test"]) and not (qs["val"] & qs["test"])
    for s in SPLITS:
        assert all(split_of(q) == s for q in qs[s])
    assert generate(5, steps=2, seed=0, split="train") == generate(9, steps=2, seed=0, split="train")[:5]
    train = generate(3, steps=2, seed=0, split="train")
    assert train[0].id == "synthetic-train-s2-0-0000" and train[0].meta["split"] == "train"
    assert generate(1, steps=2)[0].id == "synthetic-s2-0-0000"  # the test split keeps the old ids


def test_bad_split_and_not_synthetic():
    with pytest.raises(ConfigError, match="split must be one of train, val, test"):
        generate(2, split="dev")
    from reasoning.types import Problem

    with pytest.raises(ConfigError, match="is not a synthetic problem"):
        gold_steps(Problem(question="What is 2+2?", id="x"))
