"""Training the Arbitrage router from collected traces (`specstep train-router`).

`train_router(traces_dir, out_dir, ...)` reads ``traces_dir/traces.jsonl`` (one `TraceRecord` a
line, written by `specstep collect`), and:

1. checks the records: valid lines, the features of `routers.features` (names, order, version),
   enough records, both classes, at least two problems. A problem with fewer records than its
   `n_steps` (cut short by a crash) is left out and counted;
2. splits by problem, never by step: a seeded shuffle of the distinct problem ids, `test_fraction`
   of them held out (at least one problem on each side), so no problem has steps on both sides;
3. balances the classes of the training split: lightgbm by down-sampling the majority class (seeded),
   as the Arbitrage paper does, logistic by class weights; the held-out split keeps its natural balance;
4. trains a model of P(label), label = "the target writes a better step" (advantage > 0):
   ``logistic`` (scikit-learn: L2 logistic regression on standardised features with class weights
   instead of down-sampling, its strength chosen in cross-validation grouped by problem, Platt-calibrated
   on out-of-fold scores) or ``lightgbm`` (small binary trees, deterministic);
5. measures on the held-out problems (and on the training rows): ROC-AUC, Spearman's rho between
   the score and the advantage, accuracy per class at tau = 0.5, the base rate, and the escalation
   rate at each tau of a tau table; the held-out score quantiles go into the router file for
   calibration by escalation rate;
6. writes the router directory with `routers.arbitrage_model.save_router` (JSON and LightGBM's
   text format; no pickle), which loads it back to check it.

Every problem with the input is a `ConfigError` with one line. Same traces and same seed give
byte-identical router files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from reasoning import jsonl
from reasoning.errors import ConfigError
from reasoning.types import escalation_rate
from routers.arbitrage_model import (
    MODEL_FILES,
    LogisticModel,
    RouterMeta,
    TauPoint,
    file_sha256,
    load_router,
    new_meta,
    save_router,
)
from routers.features import FEATURE_NAMES, FEATURE_VERSION
from training.traces import TRACE_SCHEMA_VERSION, TraceRecord

log = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
MIN_RECORDS = 20  # fewer steps than this cannot give a router or a meaningful held-out measurement
MODEL_TYPES = ("lightgbm", "logistic")
TAU_HALF = 0.5  # the threshold of the per-class accuracies

LOGISTIC_CS = [0.01, 0.1, 1.0, 10.0]  # logistic: inverse L2 strengths tried in grouped cross-validation
LOGISTIC_FOLDS = 5
LGB_ROUNDS = 200
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 8, "max_depth": 3, "lambda_l2": 1.0,
    "feature_fraction": 1.0, "bagging_fraction": 1.0, "deterministic": True, "force_col_wise": True,
    "num_threads": 1, "verbose": -1,
}


class ClassCounts(BaseModel):
    """Steps per class: positive = the target writes a better step (label True)."""

    model_config = ConfigDict(extra="forbid")

    positive: int
    negative: int

    @property
    def total(self) -> int:
        return self.positive + self.negative


class HeldOutScore(BaseModel):
    """The trained model's score of one held-out step (what the saved router predicts for it)."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str
    step_index: int
    label: bool
    advantage: float
    score: float


class TrainReport(BaseModel):
    """What `train_router` did: the data, the split, the balancing, the metrics and the router file.

    metrics: ``train_*`` on the (balanced) training rows, ``test_*`` on the held-out problems:
    ``auc``, ``spearman`` (score vs advantage), ``accuracy`` / ``accuracy_positive`` /
    ``accuracy_negative`` (escalate when score > 0.5), ``base_rate`` (share of positive steps),
    ``escalation_rate`` (share with score > 0.5). None where undefined (one class, constant values).
    """

    model_config = ConfigDict(extra="forbid")

    traces: str
    out_dir: str
    model_type: Literal["lightgbm", "logistic"]
    seed: int
    test_fraction: float
    balance: bool
    training_data_sha256: str
    n_records: int  # valid records read
    n_problems: int  # problems used
    n_incomplete_problems: int  # problems left out: fewer records than their n_steps
    train_problems: list[str]
    test_problems: list[str]
    split_disjoint: bool  # no problem id on both sides
    train_counts: ClassCounts  # training split before balancing
    train_counts_balanced: ClassCounts  # the rows the model was fitted on
    test_counts: ClassCounts
    metrics: dict[str, float | None]
    tau_table: list[TauPoint]
    held_out: list[HeldOutScore]
    router: RouterMeta  # the saved router.json
    model_file: str


# ---------------------------------------------------------------- reading


def _traces_path(traces_dir: str | Path) -> Path:
    d = Path(traces_dir).expanduser()
    if not d.exists():
        raise ConfigError(f"traces folder {d} does not exist (collect traces with `specstep collect`)")
    if d.is_file():  # the traces file itself
        return d
    path = d / TRACES_FILE
    if not path.is_file():
        raise ConfigError(f"traces file {path} is missing: {d} holds no collected traces "
                          "(collect them with `specstep collect`)")
    return path


def _read_records(path: Path) -> list[tuple[int, TraceRecord]]:
    def parse(raw: bytes) -> TraceRecord:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"traces file {path} is not UTF-8 text") from None
        return TraceRecord.model_validate(json.loads(text))

    def bad_line(e: Exception) -> str:
        if isinstance(e, json.JSONDecodeError):
            return f"not valid JSON ({e.msg}, column {e.colno})"
        err = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e)}
        loc = ".".join(str(p) for p in err["loc"])
        return f"not a valid trace record: {loc + ': ' if loc else ''}{err['msg']}"

    out: list[tuple[int, TraceRecord]] = []
    n = len(FEATURE_NAMES)
    # read-only: train-router never changes the traces (their sha256 goes into the router file)
    for ln in jsonl.read(path, parse, bad_line, repair=False, what="traces file").lines:
        where, rec = f"{path}:{ln.number}", ln.value
        if rec.schema_version != TRACE_SCHEMA_VERSION:
            raise ConfigError(f"{where}: trace schema version {rec.schema_version}; this specstep reads version "
                              f"{TRACE_SCHEMA_VERSION}: collect again")
        if rec.feature_version != FEATURE_VERSION or tuple(rec.feature_names) != FEATURE_NAMES:
            what = (f"feature version {rec.feature_version}, routers/features.py computes {FEATURE_VERSION}"
                    if rec.feature_version != FEATURE_VERSION else "other feature names or order")
            raise ConfigError(f"{where}: collected with other features than routers/features.py ({what}): "
                              "collect again")
        if len(rec.features) != n:
            raise ConfigError(f"{where}: {len(rec.features)} feature values for {n} feature names")
        if not all(math.isfinite(x) for x in rec.features) or not math.isfinite(rec.advantage):
            raise ConfigError(f"{where}: features and advantage must be finite numbers")
        out.append((ln.number, rec))
    return out


def _complete(path: Path, records: list[tuple[int, TraceRecord]]) -> tuple[list[TraceRecord], int]:
    """The records of complete problems (n_steps records, step indices 0..n_steps-1), in file order,
    and the number of problems left out because they were cut short."""
    by_problem: dict[tuple[str, str], dict[int, int]] = {}
    n_steps: dict[tuple[str, str], set[int]] = {}
    for lineno, rec in records:
        key = (rec.dataset, rec.problem_id)
        steps = by_problem.setdefault(key, {})
        if rec.step_index in steps:
            raise ConfigError(f"{path}:{lineno}: problem {rec.problem_id!r} step {rec.step_index} appears twice "
                              f"(first on line {steps[rec.step_index]})")
        steps[rec.step_index] = lineno
        n_steps.setdefault(key, set()).add(rec.n_steps)
    incomplete = {key for key, steps in by_problem.items()
                  if len(n_steps[key]) != 1 or set(steps) != set(range(next(iter(n_steps[key]))))}
    kept = [rec for _, rec in records if (rec.dataset, rec.problem_id) not in incomplete]
    return kept, len(incomplete)


# ---------------------------------------------------------------- metrics


def rank_average(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy.stats.rankdata)."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(x, dtype=float), method="average").astype(float)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy.stats.spearmanr: Pearson correlation of average ranks), rows with a non-finite
    value dropped; None when undefined (n < 2, a constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size != b.size:
        raise ValueError(f"spearman needs equal lengths, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):  # spearmanr would warn and give nan
        return None
    rho = float(spearmanr(a, b).statistic)
    return None if math.isnan(rho) else min(1.0, max(-1.0, rho))


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """ROC-AUC as the Mann-Whitney U of the positives' scores over the negatives' (scipy.stats.mannwhitneyu)
    divided by the pairs: a tie between a positive and a negative counts 1/2. None with one class."""
    from scipy.stats import mannwhitneyu

    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    u = mannwhitneyu(s[y], s[~y], alternative="two-sided", method="asymptotic").statistic
    return float(u / (n_pos * n_neg))


def _metrics(prefix: str, labels: np.ndarray, scores: np.ndarray, advantages: np.ndarray) -> dict[str, float | None]:
    pred = scores > TAU_HALF
    pos, neg = labels, ~labels
    return {
        f"{prefix}_auc": roc_auc(labels, scores),
        f"{prefix}_spearman": spearman(scores, advantages),
        f"{prefix}_accuracy": float(np.mean(pred == labels)) if labels.size else None,
        f"{prefix}_accuracy_positive": float(np.mean(pred[pos])) if pos.any() else None,
        f"{prefix}_accuracy_negative": float(np.mean(~pred[neg])) if neg.any() else None,
        f"{prefix}_base_rate": float(np.mean(labels)) if labels.size else None,
        f"{prefix}_escalation_rate": escalation_rate(pred),
    }


# ---------------------------------------------------------------- models


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(x: np.ndarray, y: np.ndarray, groups: Sequence[str] | None = None, seed: int = 0,
                 class_weight: str | None = "balanced") -> LogisticModel:
    """scikit-learn's L2 logistic regression on standardised features, its strength chosen by ROC-AUC in
    cross-validation grouped by problem (no problem on both sides of a fold), then calibrated (Platt: a
    logistic regression of the label on the out-of-fold scores, folds by problem), which class weights
    need: they move the raw probabilities towards one half. The calibrated model is again one logistic
    model, stored as such. Without `groups` (or with fewer than 3 problems), each row is its own group."""
    try:
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import GroupKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ConfigError("--model logistic needs scikit-learn: pip install scikit-learn") from None

    groups = np.asarray(groups if groups is not None else np.arange(len(y)))
    folds = GroupKFold(n_splits=int(min(LOGISTIC_FOLDS, len(set(groups.tolist())))))
    if folds.n_splits < 2:
        raise ConfigError("the logistic router's cross-validation needs rows of at least two problems")
    splits = list(folds.split(x, y, groups))
    # a fold of one class has no ROC-AUC: choose by log loss then
    one_class = any(len(set(y[test].tolist())) < 2 or len(set(y[train].tolist())) < 2 for train, test in splits)
    scoring = "neg_log_loss" if one_class else "roc_auc"
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=LOGISTIC_CS, cv=splits, scoring=scoring, class_weight=class_weight, max_iter=1000, random_state=seed,
        l1_ratios=(0.0,), use_legacy_attributes=False))
    model.fit(x, y)
    scaler, lr = model[0], model[1]
    # out-of-fold decision values with the chosen strength, for the calibration
    fixed = make_pipeline(StandardScaler(), LogisticRegression(C=float(np.ravel(lr.C_)[0]), class_weight=class_weight,
                                                               max_iter=1000))
    oof = cross_val_predict(fixed, x, y, cv=splits, method="decision_function")
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), y)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    scales = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return LogisticModel(coefficients=[a * float(v) for v in lr.coef_[0]], intercept=a * float(lr.intercept_[0]) + b,
                         means=[float(v) for v in scaler.mean_], scales=[float(v) for v in scales])


def predict_logistic(model: LogisticModel, x: np.ndarray) -> np.ndarray:
    z = ((x - np.asarray(model.means)) / np.asarray(model.scales)) @ np.asarray(model.coefficients) + model.intercept
    return np.clip(_sigmoid(z), 0.0, 1.0)


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("--model lightgbm needs lightgbm: pip install lightgbm (or use --model logistic)") \
            from None
    return lightgbm


def fit_lightgbm(x: np.ndarray, y: np.ndarray, seed: int) -> str:
    """Small binary gradient-boosted trees; the model's native text (what the router file holds)."""
    lgb = _lightgbm()
    params = {**LGB_PARAMS, "seed": seed, "min_data_in_leaf": int(max(5, min(20, x.shape[0] // 20)))}
    data = lgb.Dataset(x, y.astype(int), feature_name=list(FEATURE_NAMES), params={"verbose": -1})
    booster = lgb.train(params, data, num_boost_round=LGB_ROUNDS)
    return booster.model_to_string()


def predict_lightgbm(model_text: str, x: np.ndarray) -> np.ndarray:
    booster = _lightgbm().Booster(model_str=model_text)  # the saved text, as the router will load it
    return np.clip(np.asarray(booster.predict(x), dtype=float).reshape(-1), 0.0, 1.0)


# ---------------------------------------------------------------- training


def _check_args(model: str, seed: int, test_fraction: float) -> None:
    if model not in MODEL_TYPES:
        raise ConfigError(f"unknown router model {model!r}: choose {' or '.join(MODEL_TYPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or math.isnan(test_fraction) or not 0.0 < test_fraction < 1.0):
        raise ConfigError(f"test fraction must be a number strictly between 0 and 1, got {test_fraction!r}")


def split_problems(problem_ids: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) problem ids: a seeded shuffle of the distinct ids, round(test_fraction * n) held
    out, at least one on each side. Both lists sorted."""
    ids = sorted(set(problem_ids))
    if len(ids) < 2:
        raise ConfigError(f"the traces hold {len(ids)} problem(s): a split by problem needs at least 2")
    n_test = min(len(ids) - 1, max(1, round(test_fraction * len(ids))))
    perm = np.random.default_rng(seed).permutation(len(ids))
    test = sorted(ids[i] for i in perm[:n_test])
    train = sorted(ids[i] for i in perm[n_test:])
    return train, test


def balance_classes(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices (increasing) of a class-balanced subset: the majority class down-sampled (seeded)."""
    pos = np.flatnonzero(labels)
    neg = np.flatnonzero(~labels)
    small, large = (pos, neg) if pos.size <= neg.size else (neg, pos)
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the split's
    keep = rng.choice(large, size=small.size, replace=False) if large.size > small.size else large
    return np.sort(np.concatenate([small, keep]))


def _counts(labels: np.ndarray) -> ClassCounts:
    n_pos = int(labels.sum())
    return ClassCounts(positive=n_pos, negative=int(labels.size) - n_pos)


def _trained_with(folder: Path) -> dict[str, str | int | None]:
    """The models and limits the traces were collected with (from the collect folder's collect.json)."""
    try:
        cfg = json.loads((folder / "collect.json").read_text())
    except (OSError, ValueError):
        log.warning("no collect.json beside the traces: the router will not record its models and limits")
        return {}
    cfg = cfg.get("identity", {}) if isinstance(cfg, dict) else {}
    keys = ("draft", "target", "judge", "step_tokens", "max_tokens", "dataset")
    return {k: cfg.get(k) for k in keys if isinstance(cfg.get(k), (str, int)) or cfg.get(k) is None}


def train_router(traces_dir: str | Path, out_dir: str | Path, model: str = "lightgbm", seed: int = 0,
                 test_fraction: float = 0.25, balance: bool = True) -> TrainReport:
    """Train an Arbitrage router on `traces_dir/traces.jsonl` and save it to `out_dir` (see the
    module docstring). ConfigError (one line) on bad input."""
    _check_args(model, seed, test_fraction)
    path = _traces_path(traces_dir)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"router output {out} exists and is not a directory")

    records = _read_records(path)
    if not records:
        raise ConfigError(f"traces file {path} holds no trace records (collect traces with `specstep collect`)")
    n_read = len(records)
    recs, n_incomplete = _complete(path, records)
    if len(recs) < MIN_RECORDS:
        cut = f" ({n_incomplete} problem(s) cut short left out)" if n_incomplete else ""
        raise ConfigError(f"traces file {path} holds {len(recs)} usable step record(s){cut}: training needs at "
                          f"least {MIN_RECORDS}; collect more problems")
    labels = np.array([r.label for r in recs], dtype=bool)
    if labels.all() or not labels.any():
        raise ConfigError(f"every step in {path} has label {bool(labels[0])} (the target "
                          f"{'is' if labels[0] else 'is never'} better): training needs steps of both classes; "
                          "collect more problems")
    pids = [r.problem_id for r in recs]
    train_ids, test_ids = split_problems(pids, test_fraction, seed)

    x = np.array([r.features for r in recs], dtype=float)
    adv = np.array([r.advantage for r in recs], dtype=float)
    test_set = set(test_ids)
    is_test = np.array([p in test_set for p in pids], dtype=bool)
    train_idx = np.flatnonzero(~is_test)
    test_idx = np.flatnonzero(is_test)
    train_counts = _counts(labels[train_idx])
    if train_counts.positive == 0 or train_counts.negative == 0:
        raise ConfigError(f"the {len(train_ids)} training problems (seed {seed}) hold steps of one class only: "
                          "collect more problems or try another --seed")
    # lightgbm balances by down-sampling (the paper); logistic keeps every row and weighs the classes
    fit_idx = train_idx[balance_classes(labels[train_idx], seed)] if balance and model != "logistic" else train_idx
    fit_counts = _counts(labels[fit_idx])

    if model == "logistic":
        fitted: Any = fit_logistic(x[fit_idx], labels[fit_idx], [pids[i] for i in fit_idx], seed,
                                   "balanced" if balance else None)

        def predict(rows: np.ndarray) -> np.ndarray:
            return predict_logistic(fitted, rows)
    else:
        fitted = fit_lightgbm(x[fit_idx], labels[fit_idx], seed)

        def predict(rows: np.ndarray) -> np.ndarray:
            return predict_lightgbm(fitted, rows)

    train_scores = predict(x[fit_idx])
    test_scores = predict(x[test_idx])
    metrics = {**_metrics("test", labels[test_idx], test_scores, adv[test_idx]),
               **_metrics("train", labels[fit_idx], train_scores, adv[fit_idx])}
    test_counts = _counts(labels[test_idx])
    counts = {
        "n_train_problems": len(train_ids), "n_test_problems": len(test_ids),
        "n_train_positive": train_counts.positive, "n_train_negative": train_counts.negative,
        "n_train_positive_balanced": fit_counts.positive, "n_train_negative_balanced": fit_counts.negative,
        "n_test_positive": test_counts.positive, "n_test_negative": test_counts.negative,
        "seed": seed, "test_fraction": float(test_fraction), "balanced": 1.0 if balance else 0.0,
    }
    sha = file_sha256(path)
    meta_metrics = {k: float(v) for k, v in {**metrics, **counts}.items() if v is not None}
    meta = new_meta(model, test_scores, metrics=meta_metrics, training_data_sha256=sha,  # type: ignore[arg-type]
                    trained_with=_trained_with(path.parent))
    try:
        saved = save_router(out, meta, fitted)
    except OSError as e:
        raise ConfigError(f"cannot write the router to {out}: {e.strerror or e}") from None
    load_router(out)  # save_router checks too; this is the path the router will use

    held_out = [HeldOutScore(problem_id=recs[i].problem_id, step_index=recs[i].step_index, label=bool(labels[i]),
                             advantage=float(adv[i]), score=float(s)) for i, s in zip(test_idx, test_scores)]
    return TrainReport(
        traces=str(path), out_dir=str(out), model_type=model, seed=seed,  # type: ignore[arg-type]
        test_fraction=float(test_fraction), balance=balance, training_data_sha256=sha, n_records=n_read,
        n_problems=len(train_ids) + len(test_ids), n_incomplete_problems=n_incomplete,
        train_problems=train_ids, test_problems=test_ids, split_disjoint=not set(train_ids) & test_set,
        train_counts=train_counts, train_counts_balanced=fit_counts, test_counts=test_counts, metrics=metrics,
        tau_table=list(saved.tau_table), held_out=held_out, router=saved,
        model_file=str(out / MODEL_FILES[model]),
    )


__all__ = [
    "MIN_RECORDS", "TRACES_FILE", "ClassCounts", "HeldOutScore", "TrainReport", "balance_classes", "fit_lightgbm",
    "fit_logistic", "predict_lightgbm", "predict_logistic", "rank_average", "roc_auc", "spearman",
    "split_problems", "train_router",
]
