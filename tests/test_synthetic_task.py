"""The testbed task: gold step-by-step solutions, exact step checks, corruptions, disjoint splits."""

import random
import re

import pytest

from eval.synthetic import (
    SPLITS,
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


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_gold_steps_compute_the_gold_answer(steps):
    for p in generate(40, steps=steps, seed=2):
        gold = gold_steps(p)
        assert len(gold) == steps + 1
        value = None
        for op, text in zip(operations(p), gold):
            assert text.startswith(f"{op.a} {op.sign} {op.k} = ")
            assert value is None or op.a == value  # each step starts from the previous count
            value = _arith(text)
        assert str(value) == p.gold
        assert gold[-1] == f"The answer is \\boxed{{{p.gold}}}."
        assert extract_answer(gold_solution(p))[0] == p.gold
        assert all(0 < op.result < 1000 for op in operations(p))


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


@pytest.mark.parametrize("kind", ["arithmetic", "operand", "previous"])
def test_corruptions_are_wrong_and_plausible(kind):
    rng = random.Random(0)
    for p in generate(30, steps=3, seed=1):
        for i in range(3):
            bad, got = corrupt_step(p, i, rng, kind)
            assert got in ("arithmetic", kind)
            assert not check_step(p, i, bad)
            assert bad.count("=") == gold_steps(p)[i].count("=") or got != "arithmetic"
            if got in ("operand", "previous"):  # the arithmetic itself is right, on a wrong number
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
