"""Find the final answer in a solution text, and a simple comparison with a gold answer.

Rules, in order: the last ``\\boxed{...}`` (balanced braces), else "The (final) answer is ...",
else (only when asked) the last number. The rule that fired is returned too, so that format
failures can be told apart from wrong answers.
"""

from __future__ import annotations

import re

_ANSWER_IS = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:|=)\s*:?\s*(.+?)\s*(?:\.\s*)?(?:$|\n)", re.IGNORECASE
)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")  # 1,250 but not 1,2,3


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}``, braces balanced."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[m.end() : i - 1].strip()
    return best


def extract_answer(text: str, *, last_number: bool = False) -> tuple[str | None, str | None]:
    """Return (answer, rule) where rule is "boxed", "answer_is", "last_number" or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    found = _ANSWER_IS.findall(text)
    if found:
        ans = found[-1].strip().strip("$").strip()
        if ans:
            return ans, "answer_is"
    if last_number:
        nums = _NUMBER.findall(text)
        if nums:
            return nums[-1].replace(",", ""), "last_number"
    return None, None


def has_final_answer(text: str) -> bool:
    return extract_answer(text)[0] is not None


def _as_number(s: str) -> float | None:
    s = s.strip().strip("$").replace(",", "").replace("\\$", "").rstrip(".").strip()
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    frac = re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(-?\d+)\}", s) or re.fullmatch(r"(-?\d+)\s*/\s*(-?\d+)", s)
    if frac and int(frac.group(2)) != 0:
        return int(frac.group(1)) / int(frac.group(2))
    try:
        return float(s)
    except ValueError:
        return None


def answers_match(prediction: str, gold: str) -> bool:
    """Numbers compare by value; anything else by whitespace-free text. The eval package grades
    LaTeX answers more thoroughly."""
    a, b = _as_number(prediction), _as_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    norm = lambda s: re.sub(r"\s+", "", s).strip("$.").lower()  # noqa: E731
    return norm(prediction) == norm(gold)
