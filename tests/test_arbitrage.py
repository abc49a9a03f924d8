"""The Arbitrage router: features, the router file format (save, load, tamper checks, calibration)
and full solves with the real bundled models."""

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from reasoning import ConfigError, Solver
from reasoning.types import Step, TokenStats
from routers import ROUTERS, make_router
from routers.arbitrage import ArbitrageRouter
from routers.arbitrage_model import (
    LogisticModel,
    RouterMeta,
    load_router,
    new_meta,
    save_router,
    tau_for_escalation_rate,
)
from routers.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    extract_features,
    features_from_context,
    features_from_step,
)

from .conftest import QUESTION

N = len(FEATURE_NAMES)
# Hand-chosen: an unsure draft (low log-probabilities, high entropy), long steps and a late position
# make the target more likely to be better. On QUESTION the scores straddle 0.5 (both authors appear).
WEIGHTS = {"mean_logprob": -1.5, "min_logprob": -0.4, "mean_entropy": 0.8, "n_tokens": 0.3,
           "budget_used": 0.5, "n_equals": 0.2, "prev_escalated": 0.3}
MEANS = {"mean_logprob": -0.6, "min_logprob": -3.0, "mean_entropy": 1.0, "n_tokens": 20.0, "budget_used": 0.3}
SCALES = {"mean_logprob": 0.5, "min_logprob": 2.0, "n_tokens": 15.0}


def _logistic() -> LogisticModel:
    return LogisticModel(coefficients=[WEIGHTS.get(n, 0.0) for n in FEATURE_NAMES], intercept=1.4,
                         means=[MEANS.get(n, 0.0) for n in FEATURE_NAMES],
                         scales=[SCALES.get(n, 1.0) for n in FEATURE_NAMES])


def _held_out_scores(n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).beta(2.0, 5.0, size=n)


@pytest.fixture
def router_dir(tmp_path):
    d = tmp_path / "router"
    meta = new_meta("logistic", _held_out_scores(), metrics={"auc": 0.71}, training_data_sha256="ab" * 32)
    save_router(d, meta, _logistic())
    return d


def _features(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    lp = list(-rng.exponential(0.7, size=12))
    ent = list(rng.exponential(1.0, size=12))
    return extract_features("So 5 + 7 = 12 balloons.", lp, ent, 3, 120, 1024, ["draft", "target", "draft"])


# ---------------------------------------------------------------- features


def test_feature_names_and_values_are_fixed_and_finite():
    assert len(set(FEATURE_NAMES)) == N and isinstance(FEATURE_VERSION, int)
    text = "Then 12 - 3 = 9, a well-known x-y fact; 2 \\times 4 = 8. The answer is \\boxed{9}."
    f = dict(zip(FEATURE_NAMES, extract_features(text, [-0.5, -2.0, -0.1], [1.0, 2.0, 0.0], 2, 300, 1000,
                                                 ["draft", "target"])))
    assert f["mean_logprob"] == pytest.approx(-2.6 / 3) and f["min_logprob"] == -2.0 and f["last_logprob"] == -0.1
    assert f["mean_entropy"] == 1.0 and f["n_tokens"] == 3 and f["n_chars"] == len(text)
    assert f["step_index"] == 2 and f["budget_used"] == 0.3
    assert f["n_numbers"] == 7 and f["n_operators"] == 2 and f["n_equals"] == 2  # "well-known", "x-y" are words
    assert f["has_final_answer"] == 1.0
    assert f["target_share"] == 0.5 and f["prev_escalated"] == 1.0 and f["n_prev_steps"] == 2
    # an empty step and infinite log-probabilities still give finite features
    for lp, ent in (([], []), ([-math.inf], [math.inf]), ([-0.1], [])):
        v = extract_features("", lp, ent, 0, 0, 16, [])
        assert len(v) == N and all(math.isfinite(x) for x in v)


def test_recorded_step_gives_the_same_features_as_the_raw_values():
    lp, ent = [-0.25, -1.5, -0.125], [0.5, 1.25, 0.75]
    stats = TokenStats(n_tokens=3, mean_logprob=sum(lp) / 3, min_logprob=-1.5, last_logprob=-0.125,
                       mean_entropy=sum(ent) / 3)
    earlier = [Step(index=0, text="a", author="draft", tokens=10), Step(index=1, text="b", author="target", tokens=7)]
    step = Step(index=2, text="x", author="draft", draft_text="So 5 + 7 = 12.", draft_stats=stats, draft_tokens=3)
    assert features_from_step(step, earlier, 512) == extract_features("So 5 + 7 = 12.", lp, ent, 2, 17, 512,
                                                                       ["draft", "target"])


# ---------------------------------------------------------------- the router file


def test_logistic_round_trip_matches_numpy(router_dir):
    assert sorted(p.name for p in router_dir.iterdir()) == ["model.json", "router.json"]
    loaded = load_router(router_dir)
    meta = loaded.meta
    assert meta.model_type == "logistic" and meta.feature_names == list(FEATURE_NAMES)
    assert meta.feature_version == FEATURE_VERSION and meta.metrics == {"auc": 0.71}
    assert meta.library_versions["numpy"] == np.__version__ and len(meta.model_sha256) == 64
    m = _logistic()
    w, mu, sd = np.array(m.coefficients), np.array(m.means), np.array(m.scales)
    for seed in range(5):
        x = np.array(_features(seed))
        expected = 1.0 / (1.0 + np.exp(-(w @ ((x - mu) / sd) + m.intercept)))
        p = loaded.predict(list(x))
        assert 0.0 <= p <= 1.0 and p == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="expected 15 features"):
        loaded.predict([0.0] * (N - 1))


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _load_error(d) -> str:
    with pytest.raises(ConfigError) as e:
        load_router(d)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_changed_coefficient_fails_the_sha256_check(router_dir):
    _edit_json(router_dir / "model.json", lambda m: m["coefficients"].__setitem__(0, 9.0))
    msg = _load_error(router_dir)
    assert str(router_dir / "model.json") in msg and "sha256 differs" in msg and "changed after training" in msg


def test_reordered_or_renamed_features_are_refused(router_dir):
    meta = router_dir / "router.json"
    original = meta.read_text()
    _edit_json(meta, lambda m: m["feature_names"].insert(0, m["feature_names"].pop(1)))
    msg = _load_error(router_dir)
    assert str(meta) in msg and "different order" in msg and "'min_logprob', expected 'mean_logprob'" in msg
    meta.write_text(original)
    _edit_json(meta, lambda m: m["feature_names"].__setitem__(2, "embedding_0"))
    msg = _load_error(router_dir)
    assert "other features" in msg and "unknown embedding_0" in msg and "missing last_logprob" in msg
    meta.write_text(original)
    _edit_json(meta, lambda m: m.__setitem__("feature_version", FEATURE_VERSION + 1))
    assert "feature version" in _load_error(router_dir)
    meta.write_text(original)
    load_router(router_dir)  # untouched again: loads


@pytest.mark.parametrize("problem,expected", [
    ("no-model", "model.json is missing"),
    ("no-meta", "router.json is missing"),
    ("garbage-meta", "router.json is not valid JSON (line 1"),
    ("garbage-model", "sha256 differs"),
    ("schema", "schema version 99"),
    ("type", "unknown model_type 'xgboost'"),
    ("field", "router.json is not valid: tau_table.0.tau"),
    ("extra", "router.json is not valid: pickle"),
    ("no-sha", "has no model_sha256"),
])
def test_broken_router_directories_give_one_clear_line(router_dir, problem, expected):
    meta, model = router_dir / "router.json", router_dir / "model.json"
    if problem == "no-model":
        model.unlink()
    elif problem == "no-meta":
        meta.unlink()
    elif problem == "garbage-meta":
        meta.write_text("{not json")
    elif problem == "garbage-model":
        model.write_text("]]]")
    elif problem == "schema":
        _edit_json(meta, lambda m: m.__setitem__("schema_version", 99))
    elif problem == "type":
        _edit_json(meta, lambda m: m.__setitem__("model_type", "xgboost"))
    elif problem == "field":
        _edit_json(meta, lambda m: m["tau_table"][0].__setitem__("tau", 3.0))
    elif problem == "extra":
        _edit_json(meta, lambda m: m.__setitem__("pickle", "x"))
    elif problem == "no-sha":
        _edit_json(meta, lambda m: m.pop("model_sha256"))
    assert expected in _load_error(router_dir)


def test_model_file_consistent_with_its_hash_is_still_checked(router_dir):
    """A model.json rewritten together with its sha256 must still match the features."""
    import hashlib

    model = router_dir / "model.json"
    for text, expected in (('{"coefficients": [1.0], "intercept": 0, "means": [0], "scales": [1]}',
                            "has 1 coefficients, but router.json names 15 features"),
                           ("[1, 2", "model.json is not valid JSON"),
                           ('{"coefficients": [], "intercept": 0, "means": [], "scales": [0]}', "not valid")):
        model.write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        _edit_json(router_dir / "router.json", lambda m, digest=digest: m.__setitem__("model_sha256", digest))
        msg = _load_error(router_dir)
        assert str(model) in msg and expected in msg


def test_missing_or_wrong_paths(tmp_path):
    assert "does not exist" in _load_error(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in _load_error(f)
    assert "router.json is missing" in _load_error(tmp_path)


def test_save_refuses_metadata_for_other_features(tmp_path):
    meta = new_meta("logistic", _held_out_scores(200))
    bad = meta.model_copy(update={"feature_names": list(reversed(FEATURE_NAMES))})
    with pytest.raises(ConfigError, match="feature names"):
        save_router(tmp_path / "r", bad, _logistic())
    short = LogisticModel(coefficients=[1.0], intercept=0.0, means=[0.0], scales=[1.0])
    with pytest.raises(ConfigError, match="1 coefficients for 15 features"):
        save_router(tmp_path / "r", meta, short)


def test_escalation_rate_calibration_picks_tau_for_the_rate(router_dir):
    meta = load_router(router_dir).meta
    fresh = _held_out_scores(20000, seed=1)  # same distribution, other steps
    for rate in (0.05, 0.2, 0.5, 0.8):
        tau = tau_for_escalation_rate(meta, rate)
        assert 0.0 <= tau <= 1.0
        assert abs(float(np.mean(fresh > tau)) - rate) < 0.03
    assert tau_for_escalation_rate(meta, 0.1) > tau_for_escalation_rate(meta, 0.3)
    for p in meta.tau_table:  # the table agrees with the quantiles it was made with
        assert 0.0 <= p.escalation_rate <= 1.0
    router = make_router("arbitrage", None, model=str(router_dir), escalation_rate="0.2")  # CLI strings
    assert router.threshold == pytest.approx(tau_for_escalation_rate(meta, 0.2)) and router.escalation_rate == 0.2


def test_router_options_and_refusals(router_dir, tmp_path, monkeypatch):
    import routers.arbitrage

    assert ROUTERS["arbitrage"] is ArbitrageRouter
    monkeypatch.setattr(routers.arbitrage, "DEFAULT_MODEL_DIR", tmp_path / "none-shipped")
    with pytest.raises(ConfigError, match=r"needs a trained router file: pass model=DIR \(train one with"):
        make_router("arbitrage", 0.5)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="router directory .* does not exist"):
        make_router("arbitrage", 0.5, model=str(router_dir / "missing"))
    m = str(router_dir)
    with pytest.raises(ConfigError, match="needs a threshold between 0.0 and 1.0 .* or the option escalation_rate"):
        make_router("arbitrage", None, model=m)
    with pytest.raises(ConfigError, match="not both"):
        make_router("arbitrage", 0.5, model=m, escalation_rate=0.2)
    with pytest.raises(ConfigError, match="threshold 1.5 is out of range"):
        make_router("arbitrage", 1.5, model=m)
    for rate in ("abc", "1.5", "0", 1, True, "nan"):
        with pytest.raises(ConfigError, match="option escalation_rate must be a number"):
            make_router("arbitrage", None, model=m, escalation_rate=rate)
    with pytest.raises(ConfigError, match="has no option tau"):
        make_router("arbitrage", 0.5, model=m, tau=0.3)
    assert make_router("arbitrage", 0.5, model=m).threshold == 0.5


# ---------------------------------------------------------------- LightGBM


def test_lightgbm_text_model_round_trip(tmp_path):
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, N))
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x, y, feature_name=list(FEATURE_NAMES)), num_boost_round=5)
    meta = new_meta("lightgbm", booster.predict(x))
    saved = save_router(tmp_path / "lgb", meta, booster.model_to_string())
    assert saved.library_versions["lightgbm"] == lgb.__version__
    assert sorted(p.name for p in (tmp_path / "lgb").iterdir()) == ["model.txt", "router.json"]
    loaded = load_router(tmp_path / "lgb")
    for row in x[:10]:
        p = loaded.predict(list(row))
        assert 0.0 <= p <= 1.0 and p == pytest.approx(float(booster.predict(row.reshape(1, -1))[0]), rel=1e-9)
    # a regression model gives no probability; a changed file fails the hash
    reg = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1}, lgb.Dataset(x, y.astype(float)),
                    num_boost_round=2)
    with pytest.raises(ConfigError, match="objective 'regression'"):
        save_router(tmp_path / "reg", meta, reg)
    model = tmp_path / "lgb" / "model.txt"
    model.write_text(model.read_text().replace("num_leaves=4", "num_leaves=5", 1))
    assert "sha256 differs" in _load_error(tmp_path / "lgb")


# ---------------------------------------------------------------- full solves with the real models


@pytest.mark.slow
def test_full_solve_scores_every_draft_step_and_follows_the_threshold(router_dir):
    sol = Solver(router="arbitrage", threshold=0.5, router_options={"model": str(router_dir)},
                 max_steps=4, step_tokens=48, max_tokens=256).solve(QUESTION)
    proposed = [s for s in sol.steps if s.draft_text is not None]
    assert proposed and sol.config.router == "arbitrage" and sol.config.threshold == 0.5
    loaded = load_router(router_dir)
    for s in proposed:
        assert 0.0 <= s.score <= 1.0
        assert s.decision == ("escalate" if s.score > 0.5 else "keep")
        assert s.author == ("target" if s.decision == "escalate" else "draft")
        # training reads the recorded step: it must see the features the router saw
        earlier = sol.steps[: s.index]
        assert loaded.predict(features_from_step(s, earlier, sol.config.max_tokens)) == s.score


class _RecordingArbitrage(ArbitrageRouter):
    """The real router, keeping the routing-time contexts' features for the parity check."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[list[float], list[float]]] = []

    def score(self, ctx):
        explicit = extract_features(ctx.draft_text, list(ctx.draft.logprobs), list(ctx.draft.entropies),
                                    ctx.step_index, sum(s.tokens for s in ctx.steps), ctx.limits.max_tokens,
                                    [s.author for s in ctx.steps])
        self.seen.append((features_from_context(ctx), explicit))
        return super().score(ctx)


@pytest.mark.slow
def test_routing_features_equal_extract_features_on_the_same_inputs(router_dir):
    router = _RecordingArbitrage(0.3, model=str(router_dir))
    sol = Solver(router=router, max_steps=3, max_tokens=200).solve(QUESTION)
    assert router.seen and len(router.seen) == len([s for s in sol.steps if s.draft_text is not None])
    for from_ctx, explicit in router.seen:
        assert from_ctx == explicit and len(from_ctx) == N
    assert router.seen[-1][0][FEATURE_NAMES.index("n_prev_steps")] == len(router.seen) - 1


def test_router_meta_schema_is_strict():
    with pytest.raises(ValidationError, match="score_quantiles"):
        RouterMeta(schema_version=1, model_type="logistic", feature_names=list(FEATURE_NAMES),
                   feature_version=FEATURE_VERSION, library_versions={}, score_quantiles=[])


@pytest.mark.slow
def test_the_shipped_default_router_loads_and_routes_out_of_the_box():
    from reasoning import solve
    from routers.arbitrage import DEFAULT_MODEL_DIR, default_model_dir

    assert default_model_dir() == DEFAULT_MODEL_DIR
    loaded = load_router(DEFAULT_MODEL_DIR)
    assert list(loaded.meta.feature_names) == list(FEATURE_NAMES)
    # its quality is tested where there is a quality gap: tests/test_testbed.py (the testbed router)
    router = make_router("arbitrage", None, escalation_rate=0.3)
    assert router.threshold == pytest.approx(tau_for_escalation_rate(loaded.meta, 0.3))
    sol = solve(QUESTION, router="arbitrage", threshold=0.5, max_steps=3)
    routed = [s for s in sol.steps if s.decision is not None]
    assert routed and all((s.decision == "escalate") == (s.score > 0.5) for s in routed)
