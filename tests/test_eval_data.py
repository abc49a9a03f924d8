import json
import re
import sys
import types
from fractions import Fraction

import pytest

from eval.datasets import DATASETS, load_dataset
from eval.synthetic import generate
from reasoning.errors import ConfigError
from reasoning.types import Problem

GSM = [
    {"benchmark": "gsm8k_test", "id": "gsm8k-test-0000", "problem": "Janet has 16 eggs and eats 3. How many are left?",
     "answer": "13", "answer_format": "integer", "meta": {}},
    {"benchmark": "gsm8k_test", "id": "gsm8k-test-0001", "problem": "A robe takes 2 bolts of blue fiber. How many?",
     "answer": "2", "answer_format": "integer", "meta": {"source": {"split": "test", "row": 1}, "tags": ["a", "b"]}},
    {"benchmark": "gsm8k_test", "id": "gsm8k-test-0002", "problem": "Josh buys a house for $80,000. Profit?",
     "answer": "70000", "answer_format": "integer", "meta": {"level": None}},
]
MATH = [
    {"benchmark": "math500", "id": "test/precalculus/807.json", "problem": "Convert $(0,3)$ to polar coordinates.",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "answer_format": "latex",
     "meta": {"subject": "Precalculus", "level": 2}},
]


def _write(folder, name, records):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    folder = tmp_path / "unified"
    _write(folder, "gsm8k_test.jsonl", GSM)
    _write(folder, "math500.jsonl", MATH)
    return folder


def _error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- files

def test_known_datasets_and_files():
    assert set(DATASETS) == {"gsm8k", "gsm8k-train", "math500", "aime24", "aime25", "amc23", "svamp", "asdiv", "mawps"}
    assert DATASETS["gsm8k"].file == "gsm8k_test.jsonl"
    assert DATASETS["math500"].file == "math500.jsonl"
    assert DATASETS["aime24"].file == "aime24.jsonl"
    assert DATASETS["gsm8k"].hub.repo == "openai/gsm8k"
    assert DATASETS["math500"].hub.repo == "HuggingFaceH4/MATH-500"


def test_load_with_data_dir(data_dir):
    problems = load_dataset("gsm8k", data_dir=data_dir)
    assert [p.id for p in problems] == ["gsm8k-test-0000", "gsm8k-test-0001", "gsm8k-test-0002"]
    first = problems[0]
    assert isinstance(first, Problem)
    assert first.question == GSM[0]["problem"] and first.gold == "13"
    assert first.meta == {"benchmark": "gsm8k_test", "answer_format": "integer"}
    # nested meta is flattened, lists are dropped, None is kept
    assert problems[1].meta == {"benchmark": "gsm8k_test", "answer_format": "integer",
                                "source.split": "test", "source.row": 1}
    assert problems[2].meta["level"] is None
    math = load_dataset("math500", data_dir=str(data_dir))
    assert math[0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math[0].meta == {"subject": "Precalculus", "level": 2, "benchmark": "math500", "answer_format": "latex"}


def test_load_with_env_var(data_dir, monkeypatch):
    monkeypatch.setenv("SPECSTEP_DATA_DIR", str(data_dir))
    assert [p.id for p in load_dataset("math500")] == ["test/precalculus/807.json"]


def test_data_dir_argument_wins_over_env_var(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSTEP_DATA_DIR", str(tmp_path / "nowhere"))
    assert len(load_dataset("gsm8k", data_dir=data_dir)) == 3
    assert "SPECSTEP_DATA_DIR" in _error("gsm8k")


def test_limit_takes_the_first_problems_in_file_order(data_dir):
    assert [p.id for p in load_dataset("gsm8k", data_dir=data_dir, limit=2)] == ["gsm8k-test-0000", "gsm8k-test-0001"]
    assert len(load_dataset("gsm8k", data_dir=data_dir, limit=100)) == 3
    assert load_dataset("gsm8k", data_dir=data_dir, limit=2, seed=5) == load_dataset("gsm8k", data_dir=data_dir,
                                                                                       limit=2, seed=9)


def test_numeric_answers_in_the_file_become_strings(tmp_path):
    _write(tmp_path, "amc23.jsonl", [{"id": "a", "problem": "q", "answer": 27.0, "answer_format": "number"},
                                     {"id": "b", "problem": "q", "answer": 7, "answer_format": "integer"}])
    assert [p.gold for p in load_dataset("amc23", data_dir=tmp_path)] == ["27", "7"]


# --------------------------------------------------------------------------- errors

def test_unknown_dataset(data_dir):
    message = _error("gsm9k", data_dir=data_dir)
    assert "unknown dataset 'gsm9k'" in message
    for name in (*DATASETS, "synthetic"):
        assert name in message


def test_missing_data_dir(tmp_path):
    message = _error("gsm8k", data_dir=tmp_path / "missing")
    assert str(tmp_path / "missing") in message and "does not exist" in message


def test_missing_file(data_dir):
    message = _error("aime24", data_dir=data_dir)
    assert str(data_dir / "aime24.jsonl") in message and "missing" in message


def test_malformed_json_line(tmp_path):
    path = _write(tmp_path, "gsm8k_test.jsonl", [GSM[0], "\n", '{"id": "x", "problem": \n'])
    message = _error("gsm8k", data_dir=tmp_path)
    assert f"{path} line 3" in message and "not valid JSON" in message


def test_line_that_is_not_an_object(tmp_path):
    _write(tmp_path, "gsm8k_test.jsonl", ["[1, 2]\n"])
    assert "line 1: expected a JSON object" in _error("gsm8k", data_dir=tmp_path)


def test_missing_field(tmp_path):
    path = _write(tmp_path, "gsm8k_test.jsonl", [GSM[0], {"id": "x", "problem": "What?"}])
    message = _error("gsm8k", data_dir=tmp_path)
    assert f"{path} line 2" in message and "missing required field(s) answer" in message


def test_bad_answer_format(tmp_path):
    _write(tmp_path, "gsm8k_test.jsonl", [{**GSM[0], "answer_format": "float"}])
    assert "answer_format 'float'" in _error("gsm8k", data_dir=tmp_path)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "gsm8k_test.jsonl", ["\n"])
    message = _error("gsm8k", data_dir=tmp_path)
    assert str(path) in message and "no problems" in message


@pytest.mark.parametrize("limit", [0, -3])
def test_bad_limit(data_dir, limit):
    assert "limit must be a positive integer" in _error("gsm8k", data_dir=data_dir, limit=limit)


def test_synthetic_options_only_for_synthetic(data_dir):
    assert "only to the synthetic dataset" in _error("gsm8k", data_dir=data_dir, steps=3)
    assert "unknown option(s) for the synthetic dataset: depth" in _error("synthetic", depth=3)


# --------------------------------------------------------------------------- no data folder

def test_no_data_dir_offline_says_pass_data_dir(monkeypatch):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def explode(*args, **kwargs):
        raise AssertionError("the Hub must not be tried when HF_HUB_OFFLINE=1")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=explode))
    message = _error("gsm8k")
    assert "--data-dir" in message and "../shared/data/unified" in message and "gsm8k_test.jsonl" in message


def test_no_data_dir_without_the_datasets_package(monkeypatch, caplog):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with caplog.at_level("INFO", logger="eval.datasets"):
        assert "--data-dir" in _error("math500")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "math500" in caplog.text and "datasets package cannot be imported" in caplog.text


def test_hub_failure_is_caught_and_logged(monkeypatch, caplog):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def fail(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fail))
    with caplog.at_level("WARNING", logger="eval.datasets"):
        assert "--data-dir" in _error("aime24")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "could not load aime24 from the Hugging Face Hub" in caplog.text
    assert "ConnectionError: no network" in caplog.text


def test_hub_rows_are_converted(monkeypatch):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake(repo, config=None, split=None):
        calls.append((repo, config, split))
        return [{"question": "Q1?", "answer": "work <<1+1=2>>\n#### 1,234"}, {"question": "Q2?", "answer": "#### 5"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake))
    problems = load_dataset("gsm8k", limit=1)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [(p.id, p.question, p.gold) for p in problems] == [("gsm8k-0", "Q1?", "1234")]
    assert problems[0].meta == {"benchmark": "gsm8k", "answer_format": "integer"}


# --------------------------------------------------------------------------- synthetic

def _evaluate(expression: str) -> tuple[Fraction, list[Fraction]]:
    """Evaluate a fully parenthesised "((a op b) op c)" string; return the value and every intermediate."""
    tokens = re.findall(r"\d+|[()+\-*/]", expression)
    assert "".join(tokens) == re.sub(r"\s+", "", expression)
    seen: list[Fraction] = []
    pos = 0

    def operand() -> Fraction:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok != "(":
            return Fraction(int(tok))
        left = operand()
        op, right = tokens[pos], Fraction(int(tokens[pos + 1]))
        assert tokens[pos + 2] == ")"
        pos += 3
        value = {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[op]
        seen.append(value)
        return value

    value = operand()
    assert pos == len(tokens)
    return value, seen


def test_synthetic_gold_answers_are_exact_and_never_negative():
    for steps in range(1, 9):
        for p in generate(25, steps=steps, seed=3):
            value, intermediates = _evaluate(p.meta["expression"])
            assert len(intermediates) == steps
            assert all(v.denominator == 1 and v > 0 for v in intermediates)
            assert p.gold == str(int(value))
            assert p.meta == {"benchmark": "synthetic", "answer_format": "integer", "steps": steps,
                              "expression": p.meta["expression"], "split": "test"}
            assert p.question.endswith("have now?")


def test_synthetic_is_deterministic_and_seeded():
    assert generate(10, steps=3, seed=7) == generate(10, steps=3, seed=7)
    assert generate(10, steps=3, seed=7)[:4] == generate(4, steps=3, seed=7)
    a = [p.question for p in generate(10, steps=3, seed=7)]
    b = [p.question for p in generate(10, steps=3, seed=8)]
    assert a != b and len(set(a) & set(b)) < 3


def test_synthetic_steps_change_the_problems():
    two, six = generate(10, steps=2, seed=0), generate(10, steps=6, seed=0)
    assert [p.question for p in two] != [p.question for p in six]
    assert all(len(p.question) < len(q.question) for p, q in zip(two, six))
    assert {p.meta["steps"] for p in six} == {6}


def test_synthetic_ids_and_variety():
    problems = generate(200, steps=4, seed=1)
    assert problems[0].id == "synthetic-s4-1-0000" and problems[12].id == "synthetic-s4-1-0012"
    assert len({p.id for p in problems}) == 200
    ops = {op for p in problems for op in re.findall(r"[+\-*/]", p.meta["expression"])}
    assert ops == {"+", "-", "*", "/"}
    assert len({p.question.split()[0] for p in problems}) > 5  # several people


@pytest.mark.parametrize("steps", [0, 9, "3"])
def test_synthetic_bad_steps(steps):
    with pytest.raises(ConfigError, match="steps must be an integer from 1 to 8"):
        generate(3, steps=steps)


def test_load_synthetic():
    assert len(load_dataset("synthetic")) == 20
    problems = load_dataset("synthetic", limit=5, seed=4, steps=3)
    assert problems == generate(5, steps=3, seed=4)
    assert load_dataset("synthetic", limit=5) == generate(5, steps=2, seed=0)
