"""eval's statistics and latency model on records built here (no model runs): paired bootstrap, McNemar,
Wilson, the fitted latency model, profile files, the choice on validation problems, the report's words."""

import json

import numpy as np
import pytest

from eval.latency import LatencyProfile, StageFit, fit_profile, read_profile, with_modeled_seconds, write_profile
from eval.records import EvalRecord
from eval.report import headline, paired_data, render_report
from eval.select import choose
from eval.stats import bootstrap, cost_at_accuracy, mcnemar, paired, wilson
from eval.summary import summarize
from reasoning.errors import ConfigError
from reasoning.types import Costs, Problem, Solution, SolveConfig, StageCost, Step

CFG = SolveConfig(draft="d", target="t", router="r", max_steps=4, max_tokens=64, step_tokens=16, delimiter="\n\n",
                  temperature=0.0)


def record(policy, threshold, pid, correct, seconds, escalation=0.0, steps=None):
    steps = steps or [Costs(draft=StageCost(calls=1, input_tokens=10, output_tokens=20, seconds=seconds,
                                            flops=1e9 * seconds))]
    total = Costs()
    for c in steps:
        total.add(c)
    sol = Solution(problem=Problem(question="q", id=pid), stop_reason="answer", config=CFG, costs=total,
                   steps=[Step(index=i, text="x", author="draft", costs=c) for i, c in enumerate(steps)])
    return EvalRecord(key=f"{pid}|{policy}@{threshold}", dataset="synthetic", problem_id=pid, policy=policy,
                      threshold=threshold, gold="1", answer="1", extracted="1", rule=None, correct=correct,
                      stop_reason="answer", wall_seconds=seconds, costs=total, steps=len(steps), target_steps=0,
                      escalation_rate=escalation, wasted_escalations=0, target_token_share=0.0, solution=sol)


def synthetic_records(rng, n=60):
    """target-only costs U(1, 3) per problem; the policy at 0.5 solves the same problems at U(0.3, 0.7) of
    that (true speedup at target-only's accuracy: E[T] / E[P] = 2); at 0.2 it is cheaper and solves the
    draft's problems."""
    out = []
    for i in range(n):
        pid = f"p{i}"
        t, d = bool(rng.random() < 0.7), bool(rng.random() < 0.3)
        cost = rng.uniform(1, 3)
        out += [record("target-only", None, pid, t, cost, 1.0), record("draft-only", None, pid, d, 0.5, 0.0),
                record("policy", 0.5, pid, t, cost * rng.uniform(0.3, 0.7), 0.6),
                record("policy", 0.2, pid, d, 0.6, 0.1)]
    return out


def test_wilson_and_mcnemar_give_the_textbook_values():
    lo, hi = wilson(15, 30)
    assert lo == pytest.approx(0.3315, abs=1e-4) and hi == pytest.approx(0.6685, abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0) and wilson(0, 10)[0] == 0.0
    # 6 problems only b solved, none only a: two-sided exact p = 2 x 0.5^6
    t = mcnemar([1, 1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0])
    assert (t.only_a, t.only_b) == (0, 6) and t.p_value == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar([1, 0], [1, 0]).p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar([1], [1, 0])


def test_cost_at_accuracy_interpolates_between_points():
    assert cost_at_accuracy([1, 3], [0.2, 0.6], 0.4) == pytest.approx(2.0)
    assert cost_at_accuracy([1, 3], [0.5, 0.6], 0.4) == 1  # the cheapest point already reaches it
    assert cost_at_accuracy([1, 3], [0.2, 0.3], 0.4) is None


def test_paired_data_averages_repeats_and_keeps_problems_every_configuration_ran():
    data = paired([("a", "p1", {"x": 1.0}), ("a", "p1", {"x": 3.0}), ("b", "p1", {"x": 5.0}),
                   ("a", "p2", {"x": 7.0})])  # b never ran p2
    assert data.configs == ["a", "b"] and data.problems == ["p1"]
    assert data.values["x"].tolist() == [[2.0], [5.0]]


def test_bootstrap_interval_covers_a_known_ratio_on_synthetic_records():
    rng = np.random.default_rng(0)
    recs = synthetic_records(rng)
    points = summarize(recs)
    heads = headline(points, paired_data(recs), n_boot=500)
    t = [r for r in recs if r.policy == "target-only"]
    p = [r for r in recs if r.policy == "policy" and r.threshold == 0.5]
    est = heads["policy"]["speedup"]["wall"]
    # the point value is target-only's mean cost over the policy's at the threshold that matches it
    assert est["value"] == pytest.approx(sum(r.wall_seconds for r in t) / sum(r.wall_seconds for r in p))
    assert est["low"] < 2.0 < est["high"] and est["significant"] and est["low"] > 1.0
    by = {pt.config: pt for pt in points}
    cost = by["policy@0.5"].cost_vs_target["wall"]  # target-only's cost over this configuration's
    assert cost["value"] == pytest.approx(est["value"]) and cost["low"] > 1.0 and cost["significant"]
    assert by["policy@0.5"].diff_vs_target == 0.0 and by["policy@0.5"].mcnemar_p == 1.0
    assert by["policy@0.5"].noninferior_within == 0.0  # the same problems solved: the interval is [0, 0]
    assert by["draft-only"].diff_high < 0 and by["draft-only"].mcnemar_p < 0.05
    # coverage: over 60 independent data sets the 95% interval holds the true ratio (2) most of the time
    covered = 0
    for k in range(60):
        recs = synthetic_records(np.random.default_rng(k + 1), n=40)
        data = paired_data(recs)
        t_row, rows = data.row("target-only"), [data.row("policy@0.2"), data.row("policy@0.5")]

        def stat(m, t_row=t_row, rows=rows):
            c = cost_at_accuracy(m["wall"][rows], m["correct"][rows], m["correct"][t_row])
            return None if c is None else m["wall"][t_row] / c
        e = bootstrap(data, stat, n_boot=250, seed=k)
        covered += e.low <= 2.0 <= e.high
    assert covered >= 51, covered  # 85%


def _curve(spec):
    """Records of 10 problems per (policy, threshold, accuracy, seconds): problem i right when i < 10 x accuracy."""
    return [record(pol, th, f"p{i}", i < round(acc * 10), sec, 1.0 if pol == "target-only" else 0.5)
            for pol, th, acc, sec in spec for i in range(10)]


def test_no_speedup_without_a_gap_and_policy_against_policy():
    flat = _curve([("draft-only", None, 0.5, 1.0), ("target-only", None, 0.5, 4.0), ("random", 0.5, 0.5, 2.0)])
    h = headline(summarize(flat), paired_data(flat), n_boot=200)
    assert h["random"]["speedup"] == {"wall": None, "flops": None}  # nothing to match
    recs = _curve([("draft-only", None, 0.2, 1.0), ("target-only", None, 0.8, 4.0), ("a", 0.2, 0.5, 1.5),
                   ("a", 0.5, 0.8, 2.0), ("b", 0.2, 0.4, 2.0), ("b", 0.5, 0.7, 3.0)])
    h = headline(summarize(recs), paired_data(recs), n_boot=200)
    assert h["a"]["speedup"]["wall"]["value"] == pytest.approx(2.0)
    assert h["b"]["speedup"]["wall"]["value"] is None
    assert h["a"]["versus"]["b"]["accuracy"] == pytest.approx(0.7)  # the highest both reach
    # a reaches 0.7 at 1.5 + (0.2/0.3) * 0.5 s; b at 3.0 s
    assert h["a"]["versus"]["b"]["wall"]["value"] == pytest.approx(3.0 / (1.5 + 0.5 * 2 / 3))
    assert h["b"]["versus"]["a"]["wall"]["value"] == pytest.approx(1 / h["a"]["versus"]["b"]["wall"]["value"])


def test_report_says_not_significant_where_the_interval_includes_one():
    rng = np.random.default_rng(3)
    recs = []
    for i in range(20):  # a policy exactly as costly as target-only, give or take noise
        t = bool(rng.random() < 0.6)
        c = rng.uniform(1, 2)
        recs += [record("target-only", None, f"p{i}", t, c, 1.0), record("draft-only", None, f"p{i}", False, 0.2),
                 record("same", 0.5, f"p{i}", t, c * rng.uniform(0.9, 1.1), 0.9)]
    points = summarize(recs)
    heads = headline(points, paired_data(recs), n_boot=400)
    est = heads["same"]["speedup"]["wall"]
    assert est["low"] < 1.0 < est["high"] and not est["significant"]
    text = render_report(points, heads, "d", "t", recs)
    row = next(ln for ln in text.splitlines() if ln.startswith("| same |"))
    assert "not significant" in row


def test_fitted_latency_model_recovers_known_coefficients_and_models_every_record():
    rng = np.random.default_rng(0)
    true = {"draft": (0.01, 0.0002, 0.004), "target": (0.03, 0.0005, 0.012), "judge": (0.02, 0.0004, 0.0)}

    def cost(stage, calls, read, written):
        o, a, b = true[stage]
        return StageCost(calls=calls, input_tokens=read, output_tokens=written,
                         seconds=(o * calls + a * read + b * written) * rng.uniform(0.98, 1.02))

    sols = []
    for i in range(40):
        steps = [Costs(draft=cost("draft", 1, int(rng.integers(5, 400)), int(rng.integers(1, 64))),
                       judge=cost("judge", 1, int(rng.integers(20, 80)), 0),
                       target=cost("target", int(rng.integers(0, 2)), int(rng.integers(5, 400)),
                                   int(rng.integers(1, 64))))
                 for _ in range(4)]
        sols.append(record("p", None, f"p{i}", True, 1.0, steps=steps).solution)
    prof = fit_profile(sols, "d", "t")
    for stage, (o, a, b) in true.items():
        f = prof.stages[stage]
        assert f.overhead == pytest.approx(o, rel=0.15, abs=1e-3) and f.prefill == pytest.approx(a, rel=0.1)
        assert f.decode == pytest.approx(b, rel=0.1, abs=1e-4) and f.r2 > 0.98
    assert "router" not in prof.stages and prof.record_error < 0.02
    assert (prof.stages["draft"].model, prof.stages["target"].model, prof.stages["judge"].model) == ("d", "t", "")
    sol = sols[0]
    expected = sum(prof.stages[s].seconds(sol.costs.stage(s)) for s in ("draft", "judge", "target"))
    assert prof.seconds(sol.costs) == pytest.approx(expected)


def test_profile_files_round_trip_and_bad_ones_are_one_line(tmp_path):
    prof = LatencyProfile(draft="d", target="t", stages={"draft": StageFit(overhead=0.1, prefill=0.0, decode=0.01)})
    write_profile(prof, tmp_path / "p.json")
    assert read_profile(tmp_path / "p.json") == prof
    with pytest.raises(ConfigError, match="is for draft 'd' and target 't', not 'a' and 't'"):
        prof.check_pair("a", "t", "p.json")
    with pytest.raises(ConfigError, match="no 'target' stage"):
        prof.seconds(Costs(target=StageCost(calls=1, output_tokens=3)))
    (tmp_path / "bad.json").write_text('{"draft": "d", "target": "t", "stages": {"draft": {"overhead": -1}}}')
    for path, msg in ((tmp_path / "bad.json", "is not a valid profile"), (tmp_path / "none.json", "No such file")):
        with pytest.raises(ConfigError, match=msg) as e:
            read_profile(path)
        assert "\n" not in str(e.value)


def test_choice_is_the_cheapest_reaching_target_only_else_the_most_accurate():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(10):
        pid = f"p{i}"
        recs += [record("target-only", None, pid, i < 6, 2.0, 1.0), record("draft-only", None, pid, i < 2, 0.5),
                 record("a", 0.3, pid, i < 6, 1.5), record("a", 0.6, pid, i < 7, 1.8),
                 record("a", 0.1, pid, i < 5, 0.9),
                 record("b", 0.5, pid, i < 3, 1.0), record("b", 0.9, pid, i < 4, 1.2 + rng.uniform(0, 0.01))]
    prof = LatencyProfile(draft="d", target="t", stages={"draft": StageFit(overhead=0.0, prefill=0.0, decode=0.05)})
    points = summarize(with_modeled_seconds(recs, prof)[0])
    got = choose(points)
    assert got["a"].config == "a@0.3" and got["a"].reached and got["a"].candidates == 3
    assert got["b"].config == "b@0.9" and not got["b"].reached
    assert choose(points, margin=0.1)["a"].config == "a@0.1"
    assert got["target-only"].config == "target-only" and got["draft-only"].config == "draft-only"


def test_eval_refuses_bad_statistics_options_before_any_model_loads(cli, tmp_path):
    base = ["eval", "--dataset", "synthetic", "--policies", "draft-only,target-only", "--out", str(tmp_path / "o")]
    assert "--repeats must be at least 1" in cli(*base, "--repeats", "0").error_line()
    assert "--select-limit must be at least 1" in cli(*base, "--select-limit", "0").error_line()
    assert "--bootstrap must be at least 100" in cli(*base, "--bootstrap", "5").error_line()
    r = cli(*base, "--select-limit", "3", "--split", "val")
    assert r.returncode == 2 and "another split" in r.error_line()
    (tmp_path / "p.json").write_text("not json")
    r = cli(*base, "--latency-profile", str(tmp_path / "p.json"))
    assert r.returncode == 2 and "is not a valid profile" in r.error_line()
    write_profile(LatencyProfile(draft="smollm2-135m", target="x", stages={}), tmp_path / "q.json")
    r = cli(*base, "--latency-profile", str(tmp_path / "q.json"), "--draft", "testbed-draft")
    assert r.returncode == 2 and "is for draft 'smollm2-135m'" in r.error_line()
    r = cli("eval", "--dataset", "synthetic", "--policies", "draft-only", "--out", str(tmp_path / "s"),
            "--select-limit", "2")
    assert r.returncode == 2 and "add target-only" in r.error_line()
    assert not (tmp_path / "o" / "records.jsonl").exists()


def test_a_dataset_without_validation_problems_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("SPECSTEP_DATA_DIR", raising=False)
    from eval.sweep import _held_out

    q = next(f"What is {i} + 1?" for i in range(100) if not _held_out(Problem(question=f"What is {i} + 1?")))
    folder = tmp_path / "unified"
    folder.mkdir()
    (folder / "gsm8k_test.jsonl").write_text(json.dumps(
        {"benchmark": "gsm8k_test", "id": "g0", "problem": q, "answer": "1", "answer_format": "integer",
         "meta": {}}) + "\n")
    r = cli("eval", "--dataset", "gsm8k", "--data-dir", str(folder), "--policies", "draft-only,target-only",
            "--out", str(tmp_path / "o"), "--select-limit", "5")
    assert r.returncode == 2 and "no validation problems" in r.error_line()


def test_report_writes_a_finished_folder_again_under_another_profile(cli, tmp_path):
    from eval.records import RecordWriter
    from eval.sweep import RUN_FILE, SweepConfig
    from reasoning import jsonl

    cfg = SweepConfig(dataset="synthetic", policies=["draft-only", "target-only", "policy"], draft="d", target="t")
    jsonl.write_identity(tmp_path / RUN_FILE, cfg.identity(), config=cfg.model_dump())
    with RecordWriter(tmp_path / "records.jsonl") as w:
        for r in synthetic_records(np.random.default_rng(0), n=12):
            w.write(r)
    r = cli("report", str(tmp_path), "--bootstrap", "200")
    assert r.returncode == 0, r.stderr
    fitted = read_profile(tmp_path / "latency_profile.json")
    assert fitted.draft == "d" and fitted.stages["draft"].rows == 48  # every solution made one draft call
    slow = fitted.model_copy(update={"stages": {"draft": StageFit(overhead=1.0, prefill=0.0, decode=0.0)}})
    write_profile(slow, tmp_path / "slow.json")
    assert cli("report", str(tmp_path), "--latency-profile", str(tmp_path / "slow.json")).returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(p["mean_modeled"] == pytest.approx(1.0) for p in summary["points"])  # one call per solution
    assert read_profile(tmp_path / "latency_profile.json") == fitted  # a given profile is not written over
    r = cli("report", str(tmp_path), "--latency-profile", "testbed-cpu")
    assert r.returncode == 2 and "is for draft 'testbed-draft'" in r.error_line()
    r = cli("report", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "is not an eval folder" in r.error_line()


def test_a_given_profile_models_its_own_pair_and_other_pairs_get_their_own_fit():
    prof = LatencyProfile(draft="d", target="t", stages={"draft": StageFit(overhead=0.0, prefill=0.0, decode=0.05)})
    mine = [record("a", None, f"p{i}", True, 1.0 + i) for i in range(4)]
    other_cfg = CFG.model_copy(update={"target": "t2"})
    theirs = [r.model_copy(update={"solution": r.solution.model_copy(update={"config": other_cfg})})
              for r in (record("b", None, f"p{i}", True, 2.0 * (1 + i)) for i in range(4))]
    out, used = with_modeled_seconds(mine + theirs, prof)
    assert [r.modeled_seconds for r in out[:4]] == [pytest.approx(0.05 * 20)] * 4  # the profile: 20 tokens written
    assert used[0] is prof and (used[1].draft, used[1].target) == ("d", "t2")
    # fitted on its own records: the same costs in each, so each gets their mean seconds
    assert [r.modeled_seconds for r in out[4:]] == pytest.approx([5.0] * 4, rel=1e-6)
