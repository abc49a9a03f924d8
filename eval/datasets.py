"""Benchmark problems as :class:`reasoning.types.Problem` records.

Offline (the normal case): the unified JSONL files described in the team's ``shared/data/README.md``
(one object a line with ``benchmark``, ``id``, ``problem``, ``answer``, ``answer_format`` and
``meta``). The folder comes from ``data_dir``, else the environment variable ``SPECSTEP_DATA_DIR``;
the team copy is ``../shared/data/unified``.

Online (best effort): with no folder given, and only where the optional ``datasets`` package is
installed and ``HF_HUB_OFFLINE`` is not set, the Hugging Face Hub copy named in :data:`DATASETS` is
tried, and converted to the same records. Hub copies can differ from the unified files (SVAMP on the
Hub is the 300-problem test split, not the 1,000-problem challenge set; MAWPS is MU-NLPC's split), so
reported numbers should come from the files. Any failure there ends in one error line that says to
pass ``--data-dir``.

``synthetic`` needs no files: see :mod:`eval.synthetic`.

Every problem gets ``id``, ``question`` (the ``problem`` field), ``gold`` (the ``answer`` string) and
``meta`` with ``benchmark``, ``answer_format`` and the file's own ``meta`` flattened to scalar values
(nested objects become dotted keys; lists are dropped). Errors are :class:`ConfigError` with a
one-line message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoning.errors import ConfigError
from reasoning.types import Problem

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SPECSTEP_DATA_DIR"
TEAM_DATA_DIR = "../shared/data/unified"
ANSWER_FORMATS = ("integer", "number", "latex", "text")
REQUIRED_FIELDS = ("id", "problem", "answer")
SYNTHETIC = "synthetic"
SYNTHETIC_DEFAULT_N = 20


def _number_text(value: Any) -> str:
    """A number as the unified files write it: ``27.0`` -> ``27``, ``"025"`` -> ``25``."""
    if isinstance(value, str):
        value = value.strip().replace(",", "")
        try:
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _gsm8k_answer(value: Any) -> str:
    return _number_text(str(value).split("####")[-1])


def _asdiv_answer(value: Any) -> str:
    return re.sub(r"\s*\([^()]*\)\s*$", "", str(value)).strip()


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face Hub, and how its rows map to the unified schema.

    ``problem`` and ``answer`` are column names (the first present one wins); ``join`` columns are
    joined with a space to make the problem (SVAMP, ASDiv)."""

    repo: str
    split: str
    config: str | None = None
    problem: tuple[str, ...] = ("problem", "question")
    join: tuple[str, ...] = ()
    answer: tuple[str, ...] = ("answer",)
    id: tuple[str, ...] = ("id", "unique_id", "ID")
    convert: Callable[[Any], str] = _number_text
    meta: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    file: str
    answer_format: str
    hub: HubSource
    notes: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "gsm8k": DatasetInfo(
        "gsm8k", "gsm8k_test.jsonl", "integer",
        HubSource("openai/gsm8k", "test", "main", problem=("question",), convert=_gsm8k_answer),
        "1,319 grade-school problems; gold is the number after ####"),
    "gsm8k-train": DatasetInfo(
        "gsm8k-train", "gsm8k_train.jsonl", "integer",
        HubSource("openai/gsm8k", "train", "main", problem=("question",), convert=_gsm8k_answer),
        "7,473 GSM8K training problems: for collecting router traces without touching the test set"),
    "math500": DatasetInfo(
        "math500", "math500.jsonl", "latex",
        HubSource("HuggingFaceH4/MATH-500", "test", convert=str, meta=("subject", "level")),
        "the MATH-500 subset of MATH (Lightman et al.); LaTeX answers"),
    "aime24": DatasetInfo(
        "aime24", "aime24.jsonl", "integer", HubSource("HuggingFaceH4/aime_2024", "train"),
        "AIME 2024 I and II, 30 problems"),
    "aime25": DatasetInfo(
        "aime25", "aime25.jsonl", "integer", HubSource("math-ai/aime25", "test"),
        "AIME 2025 I and II, 30 problems"),
    "amc23": DatasetInfo(
        "amc23", "amc23.jsonl", "number", HubSource("math-ai/amc23", "test"),
        "AMC 2023, 40 problems"),
    "svamp": DatasetInfo(
        "svamp", "svamp.jsonl", "number",
        HubSource("ChilleD/SVAMP", "test", join=("Body", "Question"), answer=("Answer",)),
        "SVAMP; the file is the 1,000-problem challenge set, the Hub test split has 300"),
    "asdiv": DatasetInfo(
        "asdiv", "asdiv.jsonl", "number",
        HubSource("EleutherAI/asdiv", "validation", join=("body", "question"), convert=_asdiv_answer),
        "ASDiv; 123 answers are text (names, times, yes/no)"),
    "mawps": DatasetInfo(
        "mawps", "mawps.jsonl", "number",
        HubSource("MU-NLPC/Calc-mawps", "test", problem=("question", "input"), answer=("result", "target")),
        "MAWPS; the file has all four subsets (2,065), the Hub copy is MU-NLPC's test split"),
}


def known_names() -> list[str]:
    return sorted([*DATASETS, SYNTHETIC])


# --------------------------------------------------------------------------- records

def _flatten(meta: Any, prefix: str = "") -> dict[str, str | int | float | bool | None]:
    out: dict[str, str | int | float | bool | None] = {}
    if not isinstance(meta, dict):
        return out
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[name] = value
    return out


def _to_problem(record: Any, where: str, default_benchmark: str) -> Problem:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if record.get(k) is None or record.get(k) == ""]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    question, answer = record["problem"], record["answer"]
    if not isinstance(question, str):
        raise ConfigError(f"{where}: field problem must be a string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ConfigError(f"{where}: field answer must be a string")
    fmt = record.get("answer_format")
    if fmt is not None and fmt not in ANSWER_FORMATS:
        raise ConfigError(f"{where}: answer_format {fmt!r} is not one of {', '.join(ANSWER_FORMATS)}")
    meta = _flatten(record.get("meta"))
    meta["benchmark"] = str(record.get("benchmark") or default_benchmark)
    meta["answer_format"] = fmt
    return Problem(id=str(record["id"]), question=question,
                   gold=answer if isinstance(answer, str) else _number_text(answer), meta=meta)


def read_unified(path: str | Path, default_benchmark: str | None = None) -> list[Problem]:
    """All problems of one unified JSONL file, in file order (blank lines are skipped)."""
    path = Path(path)
    bench = default_benchmark or path.stem
    problems = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
            problems.append(_to_problem(record, where, bench))
    return problems


# --------------------------------------------------------------------------- the Hub

def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _pick(row: dict, columns: tuple[str, ...]) -> Any:
    for c in columns:
        if row.get(c) not in (None, ""):
            return row[c]
    return None


def _hub_record(info: DatasetInfo, row: dict, index: int) -> dict:
    src = info.hub
    if src.join:
        parts = [str(row.get(c) or "").strip() for c in src.join]
        if parts and parts[0] and not parts[0].endswith((".", "?", "!")):
            parts[0] += "."
        problem = " ".join(p for p in parts if p)
    else:
        problem = _pick(row, src.problem)
    answer = _pick(row, src.answer)
    rid = _pick(row, src.id)
    return {
        "benchmark": info.name,
        "id": f"{info.name}-{rid if rid is not None else index}",
        "problem": problem,
        "answer": None if answer is None else src.convert(answer),
        "answer_format": info.answer_format,
        "meta": {k: row.get(k) for k in src.meta},
    }


def _from_hub(info: DatasetInfo) -> list[Problem] | None:
    """The Hub copy, or None when the Hub cannot be used (never raises)."""
    if _offline():
        return None
    try:
        import datasets as hf_datasets  # optional, not a dependency
    except ImportError as e:
        log.info("the Hub copy of %s is not tried: the datasets package cannot be imported (%s)", info.name, e)
        return None
    try:
        rows = hf_datasets.load_dataset(info.hub.repo, info.hub.config, split=info.hub.split)
        out = []
        for i, row in enumerate(rows):
            rec = _hub_record(info, dict(row), i)
            if info.name == "asdiv" and rec["answer"] is not None and not re.fullmatch(r"-?[\d.]+", rec["answer"]):
                rec["answer_format"] = "text"
            out.append(_to_problem(rec, f"{info.hub.repo} row {i}", info.name))
        return out or None
    except Exception as e:  # the Hub's failures share no base class (network, missing files, bad rows)
        log.warning("could not load %s from the Hugging Face Hub (%s): %s: %s", info.name, info.hub.repo,
                    type(e).__name__, e)
        return None


# --------------------------------------------------------------------------- loading

def resolve_data_dir(data_dir: str | Path | None = None) -> tuple[Path | None, str]:
    """The data folder to read and where it came from (``"data_dir"``, the env var, or None)."""
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser(), DATA_DIR_ENV
    return None, ""


def _limit(problems: list[Problem], limit: int | None) -> list[Problem]:
    return problems if limit is None else problems[:limit]


def load_dataset(name: str, data_dir: str | Path | None = None, limit: int | None = None,
                 seed: int | None = None, **synthetic_options: Any) -> list[Problem]:
    """Problems of benchmark ``name`` (see :data:`DATASETS`, or ``synthetic``).

    ``limit`` keeps the first N problems in file order; ``seed`` and ``synthetic_options`` (``steps``, ``split``)
    apply to ``synthetic`` only, which makes ``limit`` problems (20 by default). Files are never
    shuffled, so the same call always gives the same problems.
    """
    key = str(name).strip().lower()
    if key != SYNTHETIC and key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(known_names())}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")

    if key == SYNTHETIC:
        from eval.synthetic import generate

        unknown = sorted(set(synthetic_options) - {"steps", "split"})
        if unknown:
            raise ConfigError(f"unknown option(s) for the synthetic dataset: {', '.join(unknown)}; it takes steps "
                              "and split")
        return generate(limit or SYNTHETIC_DEFAULT_N, steps=synthetic_options.get("steps", 2),
                        seed=0 if seed is None else seed, split=synthetic_options.get("split", "test"))
    if synthetic_options:
        raise ConfigError(f"option(s) {', '.join(sorted(synthetic_options))} apply only to the synthetic dataset")

    info = DATASETS[key]
    folder, source = resolve_data_dir(data_dir)
    if folder is None:
        problems = _from_hub(info)
        if problems is None:
            raise ConfigError(
                f"dataset {key!r} needs a data folder: pass --data-dir (or set {DATA_DIR_ENV}) to a folder "
                f"holding {info.file}, such as the team copy {TEAM_DATA_DIR} (the Hugging Face Hub could not "
                "be used: no network, HF_HUB_OFFLINE set, or the datasets package not installed)")
        return _limit(problems, limit)
    if not folder.is_dir():
        raise ConfigError(f"data folder {folder} (from {source}) does not exist or is not a folder")
    path = folder / info.file
    if not path.is_file():
        raise ConfigError(f"dataset {key!r}: expected file {path} is missing from the data folder (from {source})")
    problems = _limit(read_unified(path, default_benchmark=key), limit)
    if not problems:
        raise ConfigError(f"dataset {key!r}: {path} holds no problems")
    return problems
