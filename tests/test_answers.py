import pytest

from reasoning.answers import answers_match, extract_answer, last_boxed


@pytest.mark.parametrize("text,answer,rule", [
    ("so \\boxed{12}.", "12", "boxed"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed"),
    ("The answer is 42.", "42", "answer_is"),
    ("Thus the final answer is: $18$.\nDone", "18", "answer_is"),
    ("no answer here, 3 and 4", None, None),
    ("unclosed \\boxed{12", None, None),
])
def test_extract_answer_rules(text, answer, rule):
    assert extract_answer(text) == (answer, rule)


def test_last_number_only_when_asked():
    assert extract_answer("we get 1,250 apples") == (None, None)
    assert extract_answer("we get 1,250 apples", last_number=True) == ("1250", "last_number")
    assert extract_answer("the sets are 1,2,3", last_number=True) == ("3", "last_number")


def test_last_boxed_balances_nested_braces():
    assert last_boxed("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}") == "\\left( 3, \\frac{\\pi}{2} \\right)"


@pytest.mark.parametrize("pred,gold,ok", [
    ("18", "18", True), ("$18", "18", True), ("1,000", "1000", True), ("0.5", "\\frac{1}{2}", True),
    ("17", "18", False), ("Mrs. Hilt", "mrs. hilt", True), ("10.0", "10", True),
])
def test_answers_match(pred, gold, ok):
    assert answers_match(pred, gold) is ok
