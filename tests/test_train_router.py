"""Training the Arbitrage router (`specstep train-router`) on synthetic but realistic traces: the
split by problem, class balancing, metrics, the saved router file, determinism, errors, the CLI,
and a full solve with the bundled models using the trained router."""

import json
import os

import numpy as np
import pytest

from reasoning import ConfigError, Solver
from routers.arbitrage import ArbitrageRouter
from routers.arbitrage_model import file_sha256, load_router, tau_for_escalation_rate
from routers.features import FEATURE_NAMES, FEATURE_VERSION
from training.traces import TargetSample, TraceRecord
from training.train import balance_classes, rank_average, roc_auc, spearman, split_problems, train_router

from .conftest import QUESTION

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
N_PROBLEMS, N_STEPS = 48, 5


def _record(pid: str, step: int, n_steps: int, rng: np.random.Generator, history: list[str]) -> TraceRecord:
    """One step: draft-side features as routers/features.py computes them; the target is better
    when the draft is unsure (low mean log-probability, high entropy), plus noise."""
    n_tokens = int(rng.integers(8, 60))
    mean_lp = -float(rng.gamma(2.0, 0.3))
    min_lp = mean_lp - float(rng.gamma(2.0, 1.0))
    entropy = float(rng.gamma(2.0, 0.5))
    text = f"Step {step + 1}: {rng.integers(2, 50)} + {rng.integers(2, 50)} = ..."
    f = [0.0] * len(FEATURE_NAMES)
    f[F["mean_logprob"]], f[F["min_logprob"]] = mean_lp, min_lp
    f[F["last_logprob"]] = max(min_lp, mean_lp + float(rng.normal(0.0, 0.2)))
    f[F["last_logprob"]] = min(0.0, f[F["last_logprob"]])
    f[F["mean_entropy"]], f[F["n_tokens"]], f[F["n_chars"]] = entropy, float(n_tokens), float(len(text))
    f[F["step_index"]], f[F["budget_used"]] = float(step), step * 40 / 1024
    f[F["n_numbers"]], f[F["n_operators"]], f[F["n_equals"]] = 2.0, 1.0, 1.0
    f[F["has_final_answer"]] = 1.0 if step == n_steps - 1 else 0.0
    # target_share / prev_escalated stay 0 (every earlier step by the draft): a constant feature
    f[F["n_prev_steps"]] = float(step)
    signal = -2.0 * (mean_lp + 0.6) / 0.4 + 1.2 * (entropy - 1.0) / 0.7
    advantage = float(np.tanh(0.3 * (signal + rng.normal(0.0, 0.8) - 0.6)))
    draft_score = float(rng.uniform(0.3, 0.9))
    targets = [TargetSample(text="Step: ...", tokens=20, score=min(1.0, max(0.0, draft_score + advantage)),
                            seconds=0.05)]
    return TraceRecord(
        dataset="synthetic", problem_id=pid, step_index=step, n_steps=n_steps, history=history,
        draft_text=text, draft_tokens=n_tokens, draft_score=draft_score, targets=targets,
        target_score=targets[0].score, advantage=advantage, label=advantage > 0, behaviour_author="draft",
        features=f, feature_names=list(FEATURE_NAMES), feature_version=FEATURE_VERSION, judge="specreason",
        draft_model="smollm2-135m", target_model="gemma3-270m", seconds={"draft": 0.02, "judge": 0.01},
    )


def make_records(n_problems: int = N_PROBLEMS, n_steps: int = N_STEPS, seed: int = 0) -> list[TraceRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_problems):
        for s in range(n_steps):
            out.append(_record(f"synthetic-{p:03d}", s, n_steps, rng, ["draft"] * s))
    return out


def write_traces(d, records) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "traces.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("traces")
    write_traces(d, make_records())
    return d


@pytest.fixture(scope="module")
def trained(traces, tmp_path_factory):
    out = tmp_path_factory.mktemp("routers")
    return {m: train_router(traces, out / m, model=m, seed=3) for m in ("logistic", "lightgbm")}


def _features_by_step(traces) -> dict:
    rows = [json.loads(line) for line in (traces / "traces.jsonl").read_text().splitlines()]
    return {(r["problem_id"], r["step_index"]): r for r in rows}


# ---------------------------------------------------------------- metric helpers


def test_ranks_auc_and_spearman_handle_ties():
    assert list(rank_average([3.0, 1.0, 3.0, 2.0])) == [3.5, 1.0, 3.5, 2.0]
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0 and roc_auc([True, False], [0.1, 0.9]) == 0.0
    assert roc_auc([True, False, True, False], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert roc_auc([True, True, False], [0.8, 0.4, 0.4]) == pytest.approx(0.75)
    assert roc_auc([True, True], [0.1, 0.2]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1.0], [2.0]) is None
    assert spearman([1, 2, float("nan"), 3], [1, 2, 0, 3]) == pytest.approx(1.0)  # nan rows dropped


def test_auc_and_spearman_match_a_brute_force_count_on_ties():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(4, 40))
        scores = rng.integers(0, 4, n) / 3  # few distinct values: many ties
        labels = rng.random(n) < 0.5
        pos, neg = scores[labels], scores[~labels]
        if not pos.size or not neg.size:
            assert roc_auc(labels, scores) is None
            continue
        pairs = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)  # every (positive, negative) pair
        assert roc_auc(labels, scores) == pytest.approx(pairs / (pos.size * neg.size), abs=1e-12)
        other = rng.integers(0, 3, n).astype(float)
        # Spearman's rho by hand: Pearson correlation of the average ranks, ranks counted pair by pair
        def ranks(v):
            return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])
        ra, rb = ranks(scores), ranks(other)
        if ra.std() == 0 or rb.std() == 0:
            assert spearman(scores, other) is None
            continue
        assert spearman(scores, other) == pytest.approx(float(np.corrcoef(ra, rb)[0, 1]), abs=1e-12)


def test_split_and_balance_are_seeded():
    ids = [f"p{i}" for i in range(10)]
    train, test = split_problems(ids * 3, 0.25, seed=1)
    assert len(test) == 2 and len(train) == 8 and not set(train) & set(test) and set(train) | set(test) == set(ids)
    assert split_problems(ids, 0.25, seed=1) == (train, test) and split_problems(ids, 0.25, seed=2) != (train, test)
    assert len(split_problems(ids[:2], 0.01, 0)[1]) == 1
    assert len(split_problems(ids[:2], 0.99, 0)[0]) == 1  # at least one problem on each side
    labels = np.array([True] * 7 + [False] * 3)
    idx = balance_classes(labels, seed=0)
    assert list(idx) == sorted(idx) and labels[idx].sum() == 3 and (~labels[idx]).sum() == 3
    assert list(balance_classes(labels, seed=0)) == list(idx)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("model", ["logistic", "lightgbm"])
def test_split_balance_and_held_out_metrics(trained, traces, model):
    rep = trained[model]
    assert rep.model_type == model and rep.n_records == N_PROBLEMS * N_STEPS and rep.n_incomplete_problems == 0
    # split by problem: no problem on both sides, every problem on one
    assert rep.split_disjoint and not set(rep.train_problems) & set(rep.test_problems)
    assert len(rep.train_problems) + len(rep.test_problems) == N_PROBLEMS == rep.n_problems
    assert len(rep.test_problems) == round(0.25 * N_PROBLEMS)
    held_pids = {h.problem_id for h in rep.held_out}
    assert held_pids == set(rep.test_problems) and len(rep.held_out) == len(rep.test_problems) * N_STEPS
    # balancing: lightgbm's training classes equal after down-sampling; logistic keeps every row (class
    # weights) and is calibrated: its mean probability on the training rows is their base rate
    before, after = rep.train_counts, rep.train_counts_balanced
    assert before.total == len(rep.train_problems) * N_STEPS and before.positive != before.negative
    assert rep.test_counts.total == len(rep.held_out)
    m = rep.metrics
    if model == "lightgbm":
        assert after.positive == after.negative == min(before.positive, before.negative)
        assert m["train_base_rate"] == pytest.approx(0.5)
    else:
        assert after == before and m["train_base_rate"] == pytest.approx(before.positive / before.total)
        loaded, rows = load_router(rep.out_dir), _features_by_step(traces)
        train = [r for (pid, _), r in rows.items() if pid in set(rep.train_problems)]
        mean_p = float(np.mean([loaded.predict(r["features"]) for r in train]))
        assert mean_p == pytest.approx(m["train_base_rate"], abs=0.03)
    assert m["test_auc"] > 0.75 and m["test_spearman"] > 0 and m["train_auc"] > 0.75
    assert 0 <= m["test_accuracy_positive"] <= 1 and 0 <= m["test_accuracy_negative"] <= 1
    assert m["test_base_rate"] == pytest.approx(rep.test_counts.positive / rep.test_counts.total)
    # the router file records metrics, counts, the data's hash and the library versions
    meta = load_router(rep.out_dir).meta
    assert meta == rep.router and meta.model_type == model
    assert meta.training_data_sha256 == file_sha256(traces / "traces.jsonl") == rep.training_data_sha256
    assert meta.metrics["test_auc"] == m["test_auc"]
    assert meta.metrics["n_train_positive"] == before.positive and meta.metrics["n_train_negative"] == before.negative
    assert meta.metrics["n_train_positive_balanced"] == after.positive
    assert "numpy" in meta.library_versions and (model != "lightgbm" or "lightgbm" in meta.library_versions)


@pytest.mark.parametrize("model", ["logistic", "lightgbm"])
def test_saved_router_predicts_the_reported_scores(trained, traces, model):
    rep = trained[model]
    loaded = load_router(rep.out_dir)
    rows = _features_by_step(traces)
    for h in rep.held_out[:: max(1, len(rep.held_out) // 8)]:
        row = rows[(h.problem_id, h.step_index)]
        assert row["label"] == h.label and row["advantage"] == h.advantage
        assert loaded.predict(row["features"]) == pytest.approx(h.score, rel=1e-9, abs=1e-12)
    router = ArbitrageRouter(0.5, model=rep.out_dir)
    assert router.model.meta == rep.router and router.threshold == 0.5


@pytest.mark.parametrize("model", ["logistic", "lightgbm"])
def test_tau_table_and_escalation_rate_calibration(trained, model):
    rep = trained[model]
    rates = [p.escalation_rate for p in rep.tau_table]
    assert [p.tau for p in rep.tau_table] == sorted(p.tau for p in rep.tau_table)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    scores = np.array([h.score for h in rep.held_out])
    for p in rep.tau_table:
        assert p.escalation_rate == pytest.approx(float(np.mean(scores > p.tau)))
    tol = 0.06 if model == "logistic" else 0.12  # trees give tied scores: the share moves in steps
    for rate in (0.2, 0.5, 0.8):
        tau = tau_for_escalation_rate(rep.router, rate)
        assert abs(float(np.mean(scores > tau)) - rate) <= tol, (rate, tau)
    assert ArbitrageRouter(None, model=rep.out_dir, escalation_rate=0.3).threshold == pytest.approx(
        tau_for_escalation_rate(rep.router, 0.3))


def test_same_seed_gives_identical_files_and_unbalanced_training(traces, tmp_path):
    for model in ("logistic", "lightgbm"):
        a = train_router(traces, tmp_path / f"{model}-a", model=model, seed=7)
        b = train_router(traces, tmp_path / f"{model}-b", model=model, seed=7)
        for name in ("router.json", os.path.basename(a.model_file)):
            assert (tmp_path / f"{model}-a" / name).read_bytes() == (tmp_path / f"{model}-b" / name).read_bytes()
        assert a.held_out == b.held_out
    c = train_router(traces, tmp_path / "c", model="logistic", seed=8)
    assert c.test_problems != a.test_problems
    u = train_router(traces, tmp_path / "u", model="logistic", seed=7, balance=False)
    assert u.train_counts_balanced == u.train_counts and u.train_counts.positive != u.train_counts.negative
    assert u.router.metrics["balanced"] == 0.0


def test_incomplete_problems_are_left_out(tmp_path):
    recs = make_records(20, 4, seed=5)
    write_traces(tmp_path / "t", recs[:-2])  # the last problem cut short after 2 of its 4 steps
    rep = train_router(tmp_path / "t", tmp_path / "r", model="logistic")
    assert rep.n_incomplete_problems == 1 and rep.n_problems == 19 and rep.n_records == 78
    assert "synthetic-019" not in rep.train_problems + rep.test_problems


# ---------------------------------------------------------------- errors


def _error(traces_dir, out_dir, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        train_router(traces_dir, out_dir, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_traces_give_one_clear_line(tmp_path, traces):
    out = tmp_path / "router"
    assert "does not exist" in _error(tmp_path / "nowhere", out)
    (tmp_path / "emptydir").mkdir()
    assert "traces.jsonl is missing" in _error(tmp_path / "emptydir", out)
    empty = tmp_path / "empty"
    write_traces(empty, [])
    assert "holds no trace records" in _error(empty, out)

    recs = make_records(12, 4, seed=1)
    one = tmp_path / "one"
    write_traces(one, [r.model_copy(update={"label": True, "advantage": 0.3}) for r in recs])
    assert "both classes" in _error(one, out)
    few = tmp_path / "few"
    write_traces(few, recs[:8])
    assert "at least 20" in _error(few, out)
    single = tmp_path / "single"
    write_traces(single, make_records(1, 24, seed=2))
    assert "at least 2" in _error(single, out)

    other = tmp_path / "other"
    write_traces(other, recs[:3] + [recs[3].model_copy(update={"feature_version": FEATURE_VERSION + 1})] + recs[4:])
    msg = _error(other, out)
    assert f"{other / 'traces.jsonl'}:4:" in msg and "other features" in msg and "collect again" in msg
    names = list(reversed(FEATURE_NAMES))
    write_traces(other, [r.model_copy(update={"feature_names": names}) for r in recs])
    assert "traces.jsonl:1: collected with other features" in _error(other, out)

    bad = tmp_path / "bad"
    write_traces(bad, recs)
    with open(bad / "traces.jsonl", "a") as f:
        f.write('{"problem_id": "x"\n')
    msg = _error(bad, out)
    assert f"traces.jsonl:{len(recs) + 1}: not valid JSON" in msg
    lines = (bad / "traces.jsonl").read_text().splitlines()
    lines[-1] = json.dumps({**json.loads(lines[0]), "label": "maybe"})
    (bad / "traces.jsonl").write_text("\n".join(lines) + "\n")
    assert f"traces.jsonl:{len(recs) + 1}: not a valid trace record: label" in _error(bad, out)

    assert "unknown router model 'xgboost'" in _error(traces, out, model="xgboost")
    assert "strictly between 0 and 1" in _error(traces, out, test_fraction=1.0)
    (tmp_path / "afile").write_text("x")
    assert "not a directory" in _error(traces, tmp_path / "afile")
    assert not out.exists()


# ---------------------------------------------------------------- CLI and a full solve

def test_cli_trains_prints_metrics_and_fails_with_one_line(cli, traces, tmp_path):
    r = cli("train-router", "--traces", str(traces), "--out", str(tmp_path / "r"), "--model", "logistic")
    assert r.returncode == 0, r.stderr
    assert "AUC" in r.stdout and "Spearman" in r.stdout and "balanced to" in r.stdout
    assert str(tmp_path / "r") in r.stdout.replace("\n", "")
    load_router(tmp_path / "r")
    for args, msg in ((["--traces", str(tmp_path / "none"), "--out", str(tmp_path / "x")], "does not exist"),
                      (["--traces", str(traces), "--out", str(tmp_path / "x"), "--test-fraction", "2"],
                       "strictly between 0 and 1"),
                      (["--traces", str(traces), "--out", str(tmp_path / "x"), "--model", "svm"], "is not one of")):
        r = cli("train-router", *args)
        assert r.returncode == 2 and msg in r.error_line()


def test_cli_solve_passes_the_escalation_rate_to_the_router(cli, trained):
    """Refusals before any model loads show that --escalation-rate reaches the arbitrage router."""
    base = ["solve", "2+2?", "--router", "arbitrage", "--router-opt", f"model={trained['logistic'].out_dir}"]
    for extra, msg in ((["--escalation-rate", "abc"], "option escalation_rate must be a number, got 'abc'"),
                       (["--escalation-rate", "0.3", "--threshold", "0.5"], "a threshold or the option "
                        "escalation_rate, not both")):
        r = cli(*base, *extra)
        assert r.returncode == 2 and msg in r.error_line()


@pytest.mark.slow
def test_full_solve_with_the_trained_router_and_an_escalation_rate(trained):
    rep = trained["logistic"]
    solver = Solver(router="arbitrage", router_options={"model": rep.out_dir, "escalation_rate": 0.5}, max_steps=3,
                    step_tokens=48, max_tokens=160)
    assert solver.router.threshold == pytest.approx(tau_for_escalation_rate(rep.router, 0.5))
    sol = solver.solve(QUESTION)
    proposed = [s for s in sol.steps if s.draft_text is not None]
    assert sol.steps and proposed and sol.config.router == "arbitrage"
    for s in proposed:
        assert 0.0 <= s.score <= 1.0 and s.decision == ("escalate" if s.score > solver.router.threshold else "keep")
