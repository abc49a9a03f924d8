from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from reasoning import grading
from reasoning.grading import Grade, grade, normalize_text, to_number

PI_TUPLE = "\\left( 3, \\frac{\\pi}{2} \\right)"


CORRECT = [
    ("1,000", "1000", "integer"),
    ("The total is 1,250 apples.", "1250", "integer"),
    ("$18", "18", "integer"),
    ("\\$18", "18", "integer"),
    ("18 dollars", "18", "integer"),
    ("The answer is $18.", "18", "integer"),
    ("\\boxed{10\\text{ dollars}}", "10", "integer"),
    ("\\boxed{\\$5.00}", "5", "integer"),
    ("025", "25", "integer"),
    ("72.0", "72", "integer"),
    ("\\boxed{50\\%}", "50", "integer"),
    ("\\boxed{90^\\circ}", "90", "integer"),
    ("\\boxed{x=5}", "5", "integer"),
    ("\\boxed{10^6}", "1000000", "integer"),
    ("\\frac{1}{2}", "0.5", "number"),
    ("\\boxed{\\dfrac{1}{2}}", "0.5", "number"),
    ("1/2", "0.5", "number"),
    ("\\boxed{-\\frac{3}{4}}", "-0.75", "number"),
    ("\\boxed{0.3333333}", "0.333333", "number"),
    ("\\boxed{18}", "18", None),
    ("\\frac{1}{2}", "\\frac{1}{2}", "latex"),
    ("1/2", "\\frac{1}{2}", "latex"),
    ("\\boxed{0.5}", "\\frac{1}{2}", "latex"),
    ("Thus $\\boxed{(3, \\frac{\\pi}{2})}$.", PI_TUPLE, "latex"),
    (f"\\boxed{{{PI_TUPLE}}}", "(3,\\frac{\\pi}{2})", "latex"),
    ("\\boxed{[2, 5)}", "[2,5)", "latex"),
    ("\\boxed{x \\in [2,5)}", "[2,5)", "latex"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "latex"),
    ("\\boxed{\\{2,1\\}}", "\\{1,2\\}", "latex"),
    ("\\boxed{\\text{Monday}}", "\\text{Monday}", "latex"),
    ("\\boxed{10000}", "10{,}000", None),
    ("The answer is Mrs. Hilt.", "Mrs. Hilt", "text"),
    ("mrs hilt", "Mrs. Hilt", "text"),
    ("Mrs. Hilt", "Mrs. Hilt", None),
    ("\\boxed{3:30 pm}", "3:30 p.m.", "text"),
    ("The answer is yes", "Yes", "text"),
    ("\\boxed{\\text{Yes}}", "Yes", "text"),
    ("3 : 4", "3:4", "text"),
    ("\\boxed{\\frac{5}{2}}", "5/2", "text"),
]


@pytest.mark.parametrize("pred,gold,fmt", CORRECT)
def test_correct_answers(pred, gold, fmt):
    g = grade(pred, gold, fmt)
    assert g.correct, g


WRONG = [
    ("\\boxed{3}", "4", "integer"),
    ("She has 17 apples left.", "18", "integer"),
    ("\\boxed{4.9999999}", "5", "integer"),
    ("\\boxed{18.5}", "18", "integer"),
    ("\\boxed{0.5}", "0.4999", "number"),
    ("\\boxed{4.6667}", "\\frac{14}{3}", "latex"),
    ("\\boxed{3.14159}", "\\pi", "latex"),
    ("\\boxed{(2,5)}", "[2,5)", "latex"),
    ("\\boxed{(3, \\pi)}", PI_TUPLE, "latex"),
    ("\\boxed{\\frac{1}{23}}", "\\frac{12}{3}", "latex"),
    ("The answer is Mr. Hilt.", "Mrs. Hilt", "text"),
    ("\\boxed{No}", "Yes", "text"),
    ("\\boxed{3:40 p.m.}", "3:30 p.m.", "text"),
    ("\\boxed{5 apples and 3 pears}", "5", "integer"),
]


@pytest.mark.parametrize("pred,gold,fmt", WRONG)
def test_wrong_answers(pred, gold, fmt):
    g = grade(pred, gold, fmt)
    assert not g.correct, g
    assert g.extracted is not None


@pytest.mark.parametrize("text,gold,fmt,extracted,rule", [
    ("First 3, then \\boxed{12}. The answer is 13.", "12", "integer", "12", "boxed"),
    ("I think 7. Final answer: 8", "8", "integer", "8", "answer_is"),
    ("So the final answer is $\\frac{1}{2}$.", "\\frac{1}{2}", "latex", "\\frac{1}{2}", "answer_is"),
    ("She has 5 + 7 - 3 = 9 balloons left.", "9", "integer", "9", "last_number"),
    ("We get 1,250 apples in all", "1250", None, "1250", "last_number"),
    ("\\frac{1}{2}", "0.5", "number", "\\frac{1}{2}", None),  # a bare answer: no rule, read whole
    ("$18", "18", "integer", "$18", None),
])
def test_extraction_rule(text, gold, fmt, extracted, rule):
    g = grade(text, gold, fmt)
    assert (g.extracted, g.rule, g.correct) == (extracted, rule, True)


@pytest.mark.parametrize("text,gold,fmt", [
    ("", "5", "integer"),
    ("I am not sure how to solve this.", "5", "integer"),
    ("We need to try harder, no luck yet", "\\frac{1}{2}", "latex"),
    ("The number 12 appears in the question", "\\frac{1}{2}", "latex"),  # last number only for numeric golds
    ("so it is 3 and the answer is \\boxed{}", "3", "integer"),
])
def test_no_answer(text, gold, fmt):
    assert grade(text, gold, fmt) == Grade(correct=False, extracted=None, rule=None, method="none")


@pytest.mark.parametrize("pred,gold,fmt,method", [
    ("\\boxed{18}", "18", "integer", "numeric"),
    ("\\boxed{10^6}", "1000000", "integer", "math_verify"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "latex", "math_verify"),
    ("\\boxed{2}", "2", "latex", "math_verify"),
    ("\\boxed{Mrs. Hilt}", "Mrs. Hilt", "text", "text"),
    ("\\boxed{2.5}", "5/2", "text", "numeric"),
])
def test_method(pred, gold, fmt, method):
    g = grade(pred, gold, fmt)
    assert g.correct and g.method == method


def test_decimal_gold_tolerance_is_relative_and_small():
    assert grade("\\boxed{1234567.8}", "1234567.8000001", "number").correct
    assert not grade("\\boxed{3.333}", "3.3333333", "number").correct
    assert not grade("\\boxed{0.50001}", "0.5", "number").correct


def test_integer_gold_is_exact():
    assert grade("\\boxed{1000000.0000001}", "1000000", "integer").correct is False
    assert grade("\\boxed{1000000.000}", "1000000", "integer").correct is True


@pytest.mark.parametrize("text,value", [
    ("18", Fraction(18)), ("$18", Fraction(18)), ("\\$18.00", Fraction(18)), ("1,000", Fraction(1000)),
    ("10{,}000", Fraction(10000)), ("025", Fraction(25)), ("18 dollars", Fraction(18)),
    ("10\\text{ dollars}", Fraction(10)), ("50\\%", Fraction(50)), ("90^{\\circ}", Fraction(90)),
    ("x = 5", Fraction(5)), ("\\frac{1}{2}", Fraction(1, 2)), ("-\\dfrac{3}{4}", Fraction(-3, 4)),
    ("\\frac12", Fraction(1, 2)), ("7/2", Fraction(7, 2)), ("42.", Fraction(42)), (".5", Fraction(1, 2)),
    ("10^6", None), ("3, 5", None), ("\\sqrt{2}", None), ("1/0", None), ("five", None), ("", None),
])
def test_to_number(text, value):
    assert to_number(text) == value


def test_normalize_text():
    assert normalize_text("Mrs. Hilt") == normalize_text("mrs hilt")
    assert normalize_text("3:30 p.m.") == normalize_text("3:30 PM")
    assert normalize_text("2.5") != normalize_text("25")


def test_grade_round_trips_as_json():
    g = grade("\\boxed{12}", "12", "integer")
    assert Grade.model_validate_json(g.model_dump_json()) == g


def test_grades_are_the_same_in_worker_threads():
    # math-verify's timeouts use signal.alarm (main thread only): other threads use a helper process
    cases = CORRECT + WRONG
    here = [grade(*c) for c in cases]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: grade(*c), cases))
    assert threaded == here
    assert any(g.method == "math_verify" for g in threaded) and any(g.method == "numeric" for g in threaded)


@pytest.mark.slow
def test_a_hanging_comparison_is_bounded_in_a_worker_thread():
    # 10^(10^10) never finishes: math-verify's 5-second timeout (a signal) must still cut it off
    with ThreadPoolExecutor(1) as pool:
        g = pool.submit(grade, "\\boxed{10^{10^{10}}}", "12", "latex").result(timeout=60)
    assert g == Grade(correct=False, extracted="10^{10^{10}}", rule="boxed", method="math_verify")


def test_a_helper_that_does_not_answer_is_replaced(monkeypatch):
    monkeypatch.setattr(grading, "HELPER_SECONDS", 0.5)
    with ThreadPoolExecutor(1) as pool:  # the comparison times out after 5 s: the guard kills the helper first
        assert not pool.submit(grade, "\\boxed{10^{10^{10}}}", "12", "latex").result(timeout=60).correct
    monkeypatch.setattr(grading, "HELPER_SECONDS", 60.0)
    with ThreadPoolExecutor(1) as pool:  # a new helper answers the next request
        assert pool.submit(grade, "\\boxed{0.5}", "\\frac{1}{2}", "latex").result(timeout=60).correct
