"""The Arbitrage router file: a directory with `router.json` (metadata) and one model file.

Layout::

    DIR/router.json   RouterMeta: schema_version, model_type, feature_names, feature_version,
                      library_versions, training_data_sha256, metrics, tau_table, score_quantiles,
                      model_sha256 (sha256 of the model file's bytes)
    DIR/model.json    model_type "logistic": LogisticModel (coefficients, intercept, means, scales)
    DIR/model.txt     model_type "lightgbm": LightGBM's native text model (Booster.model_to_string())

Loading never executes code from the files (no pickle or joblib anywhere: JSON through pydantic,
and LightGBM's own text parser) and checks everything before the router is used: both files are
present and valid, the schema version and model type are known, the feature names, their order
and the feature version equal `routers.features`, the model file's sha256 equals the metadata's,
and the model's size matches the features. Each failure is a `ConfigError` with one line that
names the file and the problem.

`save_router` writes a directory that `load_router` accepts (it loads it back to check), and fills
in the model file's sha256. `new_meta`, `score_quantiles`, `tau_table` and `file_sha256` build the
metadata at training time.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reasoning import jsonl
from reasoning.errors import ConfigError
from reasoning.io import read_text
from reasoning.types import escalation_rate
from routers.features import FEATURE_NAMES, FEATURE_VERSION

ROUTER_SCHEMA_VERSION = 1
META_FILE = "router.json"
MODEL_FILES: dict[str, str] = {"logistic": "model.json", "lightgbm": "model.txt"}
ModelType = Literal["logistic", "lightgbm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TauPoint(_Strict):
    """Escalation rate measured at threshold tau (share of held-out steps with score > tau)."""

    tau: float = Field(ge=0.0, le=1.0)
    escalation_rate: float = Field(ge=0.0, le=1.0)


class Quantile(_Strict):
    """The score below which a share q of the held-out steps' scores lie."""

    q: float = Field(ge=0.0, le=1.0)
    score: float = Field(ge=0.0, le=1.0)


class RouterMeta(_Strict):
    """router.json. Build one with `new_meta` at training time; `save_router` fills model_sha256."""

    schema_version: int
    model_type: ModelType
    feature_names: list[str]
    feature_version: int
    library_versions: dict[str, str]
    training_data_sha256: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    tau_table: list[TauPoint] = Field(default_factory=list)
    # q from 0 to 1, increasing; scores non-decreasing (for tau_for_escalation_rate)
    score_quantiles: list[Quantile]
    model_sha256: str | None = None
    # what the traces were collected with: draft, target, judge (model specs) and step_tokens, max_tokens
    trained_with: dict[str, str | int | None] = Field(default_factory=dict)

    @field_validator("score_quantiles")
    @classmethod
    def _quantiles(cls, v: list[Quantile]) -> list[Quantile]:
        if len(v) < 2:
            raise ValueError("needs at least two quantiles (q = 0 and q = 1)")
        if v[0].q != 0.0 or v[-1].q != 1.0:
            raise ValueError("must start at q = 0 and end at q = 1")
        for a, b in zip(v, v[1:]):
            if not b.q > a.q:
                raise ValueError("q must increase")
            if b.score < a.score:
                raise ValueError("scores must not decrease as q increases")
        return v

    @field_validator("model_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
            raise ValueError("must be 64 lowercase hex digits")
        return v


class LogisticModel(_Strict):
    """model.json: P = sigmoid(sum_i coefficients[i] * (x[i] - means[i]) / scales[i] + intercept)."""

    coefficients: list[float]
    intercept: float
    means: list[float]
    scales: list[float]

    @model_validator(mode="after")
    def _check(self) -> LogisticModel:
        n = len(self.coefficients)
        if len(self.means) != n or len(self.scales) != n:
            raise ValueError(f"{n} coefficients but {len(self.means)} means and {len(self.scales)} scales")
        if any(s <= 0 for s in self.scales):
            raise ValueError("scales must be positive")
        return self


# ---------------------------------------------------------------- building the metadata


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions(model_type: ModelType) -> dict[str, str]:
    names = ["specstep", "numpy", "pydantic"] + (["lightgbm"] if model_type == "lightgbm" else [])
    out = {"python": platform.python_version()}
    for name in names:
        v = _version(name)
        if v is not None:
            out[name] = v
    return out


def score_quantiles(scores: Sequence[float], n: int = 100) -> list[Quantile]:
    """Quantiles of held-out scores at q = 0, 1/n, ..., 1 (for RouterMeta.score_quantiles)."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        raise ValueError("no scores to take quantiles of")
    qs = np.round(np.linspace(0.0, 1.0, n + 1), 12)
    vals = np.maximum.accumulate(np.clip(np.quantile(s, qs), 0.0, 1.0))
    return [Quantile(q=float(q), score=float(v)) for q, v in zip(qs, vals)]


def tau_table(scores: Sequence[float], taus: Sequence[float] | None = None) -> list[TauPoint]:
    """The escalation rate of held-out steps at each tau (default 0, 0.05, ..., 1): the share of
    scores above it."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        raise ValueError("no scores to tabulate")
    grid = np.round(np.linspace(0.0, 1.0, 21), 12) if taus is None else np.asarray(taus, dtype=float)
    return [TauPoint(tau=float(t), escalation_rate=escalation_rate(s > t)) for t in grid]


def new_meta(model_type: ModelType, scores: Sequence[float], *, metrics: dict[str, float] | None = None,
             training_data_sha256: str | None = None, n_quantiles: int = 100,
             trained_with: dict[str, str | int | None] | None = None) -> RouterMeta:
    """Metadata for a router trained now on this module's features; `scores` are the model's
    predictions on held-out steps (they give the tau table and the calibration quantiles)."""
    return RouterMeta(
        schema_version=ROUTER_SCHEMA_VERSION, model_type=model_type, feature_names=list(FEATURE_NAMES),
        feature_version=FEATURE_VERSION, library_versions=library_versions(model_type),
        training_data_sha256=training_data_sha256, metrics=dict(metrics or {}), tau_table=tau_table(scores),
        score_quantiles=score_quantiles(scores, n_quantiles), trained_with=dict(trained_with or {}),
    )


def tau_for_escalation_rate(meta: RouterMeta, rate: float) -> float:
    """The tau at which about `rate` of steps escalate (score > tau), read from the held-out score
    quantiles (RouteLLM-style calibration): the (1 - rate) quantile, interpolated linearly."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"escalation rate {rate!r} is out of range: use a number between 0 and 1")
    qs = [p.q for p in meta.score_quantiles]
    vals = [p.score for p in meta.score_quantiles]
    return float(min(1.0, max(0.0, np.interp(1.0 - float(rate), qs, vals))))


# ---------------------------------------------------------------- saving


def _model_bytes(meta: RouterMeta, model: Any) -> bytes:
    if meta.model_type == "logistic":
        if not isinstance(model, LogisticModel):
            raise ConfigError(f"a logistic router needs a LogisticModel, got {type(model).__name__}")
        if len(model.coefficients) != len(meta.feature_names):
            raise ConfigError(f"the logistic model has {len(model.coefficients)} coefficients for "
                              f"{len(meta.feature_names)} features")
        return (model.model_dump_json(indent=2) + "\n").encode()
    if hasattr(model, "model_to_string"):  # a lightgbm.Booster
        model = model.model_to_string()
    if not isinstance(model, str):
        raise ConfigError(f"a lightgbm router needs a Booster or its model text, got {type(model).__name__}")
    return model.encode()


def save_router(directory: str | Path, meta: RouterMeta, model: Any) -> RouterMeta:
    """Write router.json and the model file (LogisticModel for "logistic"; a lightgbm.Booster or
    its `model_to_string()` text for "lightgbm") into `directory`, creating it. The metadata must
    name this module's features; model_sha256 is filled in. The directory is loaded back to check
    it; the saved metadata is returned."""
    if tuple(meta.feature_names) != FEATURE_NAMES or meta.feature_version != FEATURE_VERSION:
        raise ConfigError("the router's feature names or version differ from routers/features.py: "
                          "build the metadata with new_meta()")
    if meta.schema_version != ROUTER_SCHEMA_VERSION:
        raise ConfigError(f"router schema version {meta.schema_version} cannot be written: "
                          f"this specstep writes {ROUTER_SCHEMA_VERSION}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _model_bytes(meta, model)
    jsonl.replace(d / MODEL_FILES[meta.model_type], data)
    meta = meta.model_copy(update={"model_sha256": hashlib.sha256(data).hexdigest()})
    RouterMeta.model_validate(meta.model_dump())
    jsonl.replace(d / META_FILE, (meta.model_dump_json(indent=2) + "\n").encode())
    load_router(d)
    return meta


# ---------------------------------------------------------------- loading


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass
class LoadedRouter:
    """A checked router file. `predict` gives P(the target writes a better step) in [0, 1]."""

    path: Path
    meta: RouterMeta
    logistic: LogisticModel | None = None
    booster: Any = None  # lightgbm.Booster

    def __post_init__(self) -> None:
        if self.logistic is not None:
            m = self.logistic
            self._w = np.asarray(m.coefficients, dtype=float)
            self._mean = np.asarray(m.means, dtype=float)
            self._scale = np.asarray(m.scales, dtype=float)

    def predict(self, features: Sequence[float]) -> float:
        x = np.asarray(features, dtype=float)
        if x.shape != (len(self.meta.feature_names),):
            raise ValueError(f"expected {len(self.meta.feature_names)} features, got shape {x.shape}")
        if self.logistic is not None:
            if not np.all(np.isfinite(x)):
                raise ValueError(f"features must be finite, got {list(features)}")
            z = float(np.dot(self._w, (x - self._mean) / self._scale)) + self.logistic.intercept
            return _sigmoid(z)
        p = float(np.asarray(self.booster.predict(x.reshape(1, -1))).reshape(-1)[0])
        return min(1.0, max(0.0, p))


def _load_json(path: Path) -> Any:
    return _parse_json(path, read_text(path, "router file"))


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"router file {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") \
            from None


def _invalid(path: Path, e: ValidationError) -> ConfigError:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return ConfigError(f"router file {path} is not valid: {where + ': ' if where else ''}{err['msg']}")


def _check_features(path: Path, meta: RouterMeta) -> None:
    if meta.feature_version != FEATURE_VERSION:
        raise ConfigError(f"router file {path} was trained on feature version {meta.feature_version}, but "
                          f"routers/features.py computes version {FEATURE_VERSION}: retrain the router")
    names, ours = list(meta.feature_names), list(FEATURE_NAMES)
    if names == ours:
        return
    extra = [n for n in names if n not in ours]
    missing = [n for n in ours if n not in names]
    if extra or missing:
        parts = ([f"unknown {', '.join(extra)}"] if extra else []) + ([f"missing {', '.join(missing)}"]
                                                                     if missing else [])
        raise ConfigError(f"router file {path} names other features than routers/features.py "
                          f"({'; '.join(parts)}): retrain the router")
    if len(names) != len(set(names)):
        raise ConfigError(f"router file {path} lists a feature twice: retrain the router")
    i = next(i for i, (a, b) in enumerate(zip(names, ours)) if a != b)
    raise ConfigError(f"router file {path} lists the features in a different order than routers/features.py "
                      f"(position {i}: {names[i]!r}, expected {ours[i]!r})")


def _load_lightgbm(path: Path, text: str, meta: RouterMeta) -> Any:
    try:
        import lightgbm
    except ImportError:
        raise ConfigError(f"router file {path} is a LightGBM model, but lightgbm is not installed: "
                          "pip install lightgbm") from None
    try:
        booster = lightgbm.Booster(model_str=text)
    except Exception as e:  # LightGBMError or a parse failure
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"router file {path} is not a valid LightGBM text model: {msg}") from None
    n = booster.num_feature()
    if n != len(meta.feature_names):
        raise ConfigError(f"router file {path} has {n} features, but router.json names {len(meta.feature_names)}")
    names = list(booster.feature_name())
    if names != [f"Column_{i}" for i in range(n)] and names != list(meta.feature_names):
        raise ConfigError(f"router file {path} names its features {names}, not as router.json does")
    objective = next((line.split("=", 1)[1] for line in text.splitlines() if line.startswith("objective=")), "")
    if not objective.startswith(("binary", "cross_entropy", "xentropy")):
        raise ConfigError(f"router file {path} has objective {objective or 'none'!r}: the router needs a "
                          "probability (objective binary or cross_entropy)")
    return booster


def load_router(directory: str | Path) -> LoadedRouter:
    """Load and check a router directory (see the module docstring); ConfigError on any problem."""
    d = Path(directory).expanduser()
    if not d.exists():
        raise ConfigError(f"router directory {d} does not exist")
    if not d.is_dir():
        raise ConfigError(f"router path {d} is not a directory (a router is a directory holding {META_FILE})")
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise ConfigError(f"router file {meta_path} is missing: {d} is not a router directory")
    raw = _load_json(meta_path)
    if not isinstance(raw, dict):
        raise ConfigError(f"router file {meta_path} is not valid: expected a JSON object")
    version = raw.get("schema_version")
    if version != ROUTER_SCHEMA_VERSION:
        raise ConfigError(f"router file {meta_path} has schema version {version!r}; this specstep reads "
                          f"version {ROUTER_SCHEMA_VERSION}")
    mtype = raw.get("model_type")
    if mtype not in MODEL_FILES:
        raise ConfigError(f"router file {meta_path} has unknown model_type {mtype!r} "
                          f"(known: {', '.join(MODEL_FILES)})")
    try:
        meta = RouterMeta.model_validate(raw)
    except ValidationError as e:
        raise _invalid(meta_path, e) from None
    _check_features(meta_path, meta)
    if meta.model_sha256 is None:
        raise ConfigError(f"router file {meta_path} has no model_sha256: save routers with save_router()")

    model_path = d / MODEL_FILES[meta.model_type]
    if not model_path.is_file():
        raise ConfigError(f"router file {model_path} is missing (router.json says model_type {meta.model_type!r})")
    try:
        data = model_path.read_bytes()
    except OSError as e:
        raise ConfigError(f"router file {model_path} cannot be read: {e.strerror}") from None
    if hashlib.sha256(data).hexdigest() != meta.model_sha256:
        raise ConfigError(f"router file {model_path} does not match its metadata (sha256 differs): "
                          "the file was changed after training")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"router file {model_path} is not UTF-8 text") from None

    if meta.model_type == "logistic":
        try:
            model = LogisticModel.model_validate(_parse_json(model_path, text))
        except ValidationError as e:
            raise _invalid(model_path, e) from None
        if len(model.coefficients) != len(meta.feature_names):
            raise ConfigError(f"router file {model_path} has {len(model.coefficients)} coefficients, but "
                              f"router.json names {len(meta.feature_names)} features")
        return LoadedRouter(d, meta, logistic=model)
    return LoadedRouter(d, meta, booster=_load_lightgbm(model_path, text, meta))


__all__ = [
    "META_FILE", "MODEL_FILES", "ROUTER_SCHEMA_VERSION", "LoadedRouter", "LogisticModel", "Quantile", "RouterMeta",
    "TauPoint", "file_sha256", "library_versions", "load_router", "new_meta", "save_router", "score_quantiles",
    "tau_for_escalation_rate", "tau_table",
]
