"""Grade a solution (or a bare answer) against a gold answer.

Extraction, in order (the rule that fired is kept, so that format failures can be told from wrong
answers):

1. the last ``\\boxed{...}``                                -> rule ``"boxed"``
2. "The (final) answer is ..."                               -> rule ``"answer_is"``
3. the whole input, when it is itself a bare answer (one short line such as ``"\\frac{1}{2}"``,
   ``"$18"`` or ``"Mrs. Hilt"``)                             -> rule ``None`` with ``extracted`` set
4. numeric golds only: the last number in the text           -> rule ``"last_number"``

Rules 1, 2 and 4 are :func:`reasoning.answers.extract_answer`. Nothing found: ``extracted`` and
``rule`` are None, ``correct`` is False and ``method`` is ``"none"``.

Comparison, by the kind of gold answer:

* numeric (``answer_format`` ``integer``/``number``, or a gold that is a plain number when the
  format is not given): the prediction is normalised (``$``, ``\\$``, thousands commas, ``{,}``,
  ``\\text{}``, unit words after the number, a trailing period, leading zeros, ``%``, ``^\\circ``,
  ``x =``, ``\\frac{a}{b}`` and ``a/b``) and compared by exact rational value; a gold with a decimal
  point allows a relative difference of 1e-6. A prediction that is not a plain number after this
  (``10^6``, ``\\sqrt{25}``) goes to math-verify. ``method="numeric"``.
* LaTeX (``answer_format="latex"``, or, when the format is not given, a gold that is neither a
  plain number nor plain words): math-verify 0.9.0, gold parsed as ``$gold$`` and the prediction as ``\\boxed{pred}``
  (else ``$pred$``); if that fails, normalised string equality. ``method="math_verify"``, or
  ``"text"`` where only the string fallback matched or math-verify could not read the gold.
* text (``answer_format="text"``: ASDiv names, times, ratios, yes/no; or, when the format is not
  given, a gold made of plain words such as ``Mrs. Hilt``): case-insensitive equality
  after whitespace and punctuation normalisation; two values that both read as numbers (``5/2`` and
  ``2.5``) compare by value. ``method="text"`` (``"numeric"`` for the by-value match).

math-verify bounds its parsing and comparison time (5 seconds each) with ``signal.alarm``, which
works only in the main thread. :func:`grade` can be called from any thread and gives the same grade
everywhere: in the main thread math-verify runs here, as it always did; in any other thread it runs
in a helper process (``python -c``, started on first use, one per process, answering one request at
a time), in that process's main thread with the same timeouts. A timeout that must interrupt
Python's big-number arithmetic (``10^{10^{10}}``) needs a signal, and only a main thread receives
one: passing math-verify ``parsing_timeout=None`` / ``timeout_seconds=None`` in a worker thread would
let such an answer hang it (and eat memory) without end. If the helper does not answer within
``HELPER_SECONDS`` it is killed (a new one starts on the next call) and the comparison is False, as a
timeout is. On Windows math-verify's timeouts use processes and work in any thread, so it runs here.
Grading does not measure or report time.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reasoning.answers import extract_answer

Rule = Literal["boxed", "answer_is", "last_number"]
Method = Literal["numeric", "math_verify", "text", "none"]

REL_TOL = 1e-6
_BARE_MAX_CHARS = 80
_WORDS = re.compile(r"[A-Za-z]+(?:[ .']+[A-Za-z]+)*\.?")  # "Mrs. Hilt", "Yes": a text gold


class Grade(BaseModel):
    """The outcome of grading one answer."""

    model_config = ConfigDict(extra="forbid")

    correct: bool
    extracted: str | None = None
    rule: Rule | None = None
    method: Method = "none"


# --------------------------------------------------------------------------- numbers

_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_NUMBER_WITH_UNIT = re.compile(
    r"(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)"
    r"(?:\s*(?P<unit>[A-Za-z][A-Za-z .'/-]*))?"
)
_FRAC = re.compile(r"(?P<sign>[-+]?)\\[dt]?frac\s*\{\s*(?P<a>[-+]?\d+)\s*\}\s*\{\s*(?P<b>[-+]?\d+)\s*\}")
_FRAC_SHORT = re.compile(r"(?P<sign>[-+]?)\\[dt]?frac(?P<a>\d)(?P<b>\d)")
_SLASH = re.compile(r"(?P<sign>)(?P<a>[-+]?\d+)\s*/\s*(?P<b>[-+]?\d+)")


def _strip_wrappers(s: str) -> str:
    """Remove LaTeX and currency decoration around a short answer."""
    s = s.strip().replace("\u2212", "-")
    s = re.sub(r"\\(?:left|right|displaystyle)\b", "", s)
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = s.replace("\\[", "").replace("\\]", "")
    s = s.replace("{,}", ",")
    s = re.sub(r"\\[,;:! ]", " ", s).replace("~", " ")
    return s.strip()


def to_number(text: str) -> Fraction | None:
    """The exact value of a short numeric answer, or None when it is not one.

    Accepts ``18``, ``$18``, ``\\$18.00``, ``1,000``, ``10{,}000``, ``025``, ``18 dollars``,
    ``10\\text{ dollars}``, ``50\\%``, ``90^\\circ``, ``x = 5``, ``\\frac{1}{2}``, ``-\\dfrac{3}{4}``,
    ``1/2`` and a trailing period. Anything else (``10^6``, ``3, 5``, ``\\sqrt{2}``) gives None.
    """
    s = _strip_wrappers(text)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\circ", "").replace("\u00b0", "")
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"^[A-Za-z]\w*\s*=\s*", "", s)  # "x = 5"
    s = s.strip().rstrip(".").strip()
    if not s:
        return None
    for pattern in (_FRAC, _FRAC_SHORT, _SLASH):
        m = pattern.fullmatch(s)
        if m:
            b = int(m["b"])
            if b == 0:
                return None
            value = Fraction(int(m["a"]), b)
            return -value if m["sign"] == "-" else value
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m:
        return Fraction(m["num"].replace(",", ""))
    return None


def _is_plain_number(gold: str) -> bool:
    s = gold.strip().strip("$").strip()
    return bool(_PLAIN_NUMBER.fullmatch(s) or re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s))


def _numbers_equal(pred: Fraction, gold: Fraction, gold_text: str) -> bool:
    if "." not in gold_text:
        return pred == gold
    return math.isclose(float(pred), float(gold), rel_tol=REL_TOL, abs_tol=0.0) or pred == gold


# --------------------------------------------------------------------------- text

def normalize_text(text: str) -> str:
    """Lower case, LaTeX/currency wrappers removed, punctuation dropped (a period between digits and
    ``:`` / ``/`` are kept), whitespace removed: ``"Mrs. Hilt"`` and ``"mrs hilt"`` agree, and so do
    ``"3:30 p.m."`` and ``"3:30 pm"``."""
    s = _strip_wrappers(text).lower()
    s = re.sub(r"(?<=\d)\.(?=\d)", "\0", s)  # protect decimal points
    s = re.sub(r"[^\w:/\0]", "", s).replace("_", "")
    return s.replace("\0", ".")


def _normalize_latex(text: str) -> str:
    """The string-equality fallback for LaTeX answers: wrappers, spacing commands, whitespace and a
    trailing period removed, lower case; braces and punctuation are kept."""
    s = _strip_wrappers(text)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    return re.sub(r"\s+", "", s).rstrip(".").lower()


# --------------------------------------------------------------------------- math-verify

def _math_verify_here(pred: str, gold: str) -> bool | None:
    """math-verify in this thread, with its own signal-based timeouts (a main thread, or Windows)."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$")
    if not gold_parsed:
        return None
    pred_parsed = parse(f"\\boxed{{{pred}}}") or parse(f"${pred}$")
    if not pred_parsed:
        return None
    return bool(verify(gold_parsed, pred_parsed))


# The helper process: reads [pred, gold] JSON lines, answers true/false/null lines.
HELPER_SECONDS = 120.0
_HELPER_CODE = (
    "import json, sys\n"
    "sys.path.insert(0, {root!r})\n"
    "from reasoning.grading import _math_verify_here\n"
    "for line in sys.stdin:\n"
    "    pred, gold = json.loads(line)\n"
    "    sys.stdout.write(json.dumps(_math_verify_here(pred, gold)) + '\\n')\n"
    "    sys.stdout.flush()\n"
)


class _Helper:
    """One helper process, shared by the threads of this process (a lock serialises the requests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parent.parent)
        return subprocess.Popen([sys.executable, "-c", _HELPER_CODE.format(root=root)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def ask(self, pred: str, gold: str) -> bool | None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            try:
                proc.stdin.write(json.dumps([pred, gold]) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], HELPER_SECONDS)
                line = proc.stdout.readline() if ready else ""
            except OSError:
                line = ""
            if not line:  # no answer in time, or the helper died (out of memory on a huge number)
                self._stop()
                return False
            return json.loads(line)

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()  # the helper's loop ends at end of input
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                self._stop()


_HELPER = _Helper()
atexit.register(_HELPER.close)


def _math_verify(pred: str, gold: str) -> bool | None:
    """True/False from math-verify; None when it could not read the gold or the prediction. Any thread."""
    if threading.current_thread() is threading.main_thread() or os.name != "posix":
        return _math_verify_here(pred, gold)
    return _HELPER.ask(pred, gold)


# --------------------------------------------------------------------------- grading

def _kind(gold: str, answer_format: str | None) -> str:
    if answer_format in ("integer", "number"):
        return "numeric" if to_number(gold) is not None else "latex"
    if answer_format == "text":
        return "text"
    if answer_format == "latex":
        return "latex"
    if _is_plain_number(gold):
        return "numeric"
    return "text" if _WORDS.fullmatch(gold) and re.search(r"[A-Za-z]{3}", gold) else "latex"


def _bare_answer(text: str, kind: str) -> str | None:
    """The whole input when it is a bare answer rather than a solution text."""
    s = text.strip()
    if not s or "\n" in s or len(s) > _BARE_MAX_CHARS:
        return None
    if kind == "numeric":
        return s if to_number(s) is not None else None
    if kind == "latex":
        words = re.sub(r"\\[A-Za-z]+", " ", re.sub(r"\\text\s*\{[^{}]*\}", " ", s))
        return None if re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", words) else s
    return s


def _extract(text: str, kind: str) -> tuple[str | None, Rule | None]:
    answer, rule = extract_answer(text)
    if answer is not None:
        return answer, rule
    bare = _bare_answer(text, kind)
    if bare is not None:
        return bare, None
    if kind == "numeric":
        return extract_answer(text, last_number=True)
    return None, None


def _compare_numeric(pred: str, gold: str) -> tuple[bool, Method]:
    gold_value = to_number(gold)
    pred_value = to_number(pred)
    if gold_value is None:  # cannot happen: _kind checked it
        return _compare_latex(pred, gold)
    if pred_value is not None:
        return _numbers_equal(pred_value, gold_value, gold), "numeric"
    verdict = _math_verify(pred, gold)
    return bool(verdict), "math_verify"


def _compare_latex(pred: str, gold: str) -> tuple[bool, Method]:
    verdict = _math_verify(pred, gold)
    if verdict:
        return True, "math_verify"
    if _normalize_latex(pred) == _normalize_latex(gold):
        return True, "text"
    return False, "math_verify" if verdict is not None else "text"


def _compare_text(pred: str, gold: str) -> tuple[bool, Method]:
    if normalize_text(pred) == normalize_text(gold):
        return True, "text"
    p, g = to_number(pred), to_number(gold)
    if p is not None and g is not None:
        return _numbers_equal(p, g, gold), "numeric"
    return False, "text"


def grade(solution_text_or_answer: str, gold: str, answer_format: str | None = None) -> Grade:
    """Grade a solution text (or an already extracted answer) against ``gold``.

    ``answer_format`` is the unified schema's ``integer``, ``number``, ``latex`` or ``text``; None
    infers it (a plain number is numeric, plain words are text, anything else LaTeX). Any thread (see the
    module docstring).
    """
    gold = str(gold).strip()
    kind = _kind(gold, answer_format)
    extracted, rule = _extract(solution_text_or_answer or "", kind)
    if extracted is None or not extracted.strip():
        return Grade(correct=False, extracted=None, rule=None, method="none")
    compare = {"numeric": _compare_numeric, "latex": _compare_latex, "text": _compare_text}[kind]
    correct, method = compare(extracted, gold)
    return Grade(correct=correct, extracted=extracted, rule=rule, method=method)
