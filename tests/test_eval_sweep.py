"""`specstep eval` end to end on generated problems with the real bundled models."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from eval.latency import read_profile
from eval.records import EvalRecord, read_records
from eval.report import write_outputs
from eval.summary import Point, area_score, latency_at_accuracy, pareto, wilson
from eval.sweep import SweepConfig, run_sweep
from reasoning import ConfigError

LIMITS = {"max_steps": 3, "step_tokens": 48, "max_tokens": 144}
PAIR = {"draft": "testbed-draft", "target": "testbed-target"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = SweepConfig(dataset="synthetic", limit=3, seed=1, synthetic_steps=2,
                      policies=["draft-only", "target-only", "random"], thresholds=[0.5], limits=LIMITS, **PAIR)
    records = run_sweep(cfg, out, progress=False)
    points = write_outputs(records, out, cfg.draft, cfg.target)
    return out, records, points


@pytest.mark.slow
def test_sweep_writes_every_file_with_consistent_values(sweep):
    out, records, points = sweep
    assert len(records) == 9 and len({r.key for r in records}) == 9
    by = {p.config: p for p in points}
    assert set(by) == {"draft-only", "target-only", "random@0.5"}
    assert by["target-only"].escalation_rate == 1.0 and by["target-only"].target_token_share == 1.0
    assert by["draft-only"].escalation_rate == 0.0 and by["draft-only"].target_token_share == 0.0
    for p in points:
        rs = [r for r in records if (r.policy, r.threshold) == (p.policy, p.threshold)]
        assert p.n == 3 and p.correct == sum(r.correct for r in rs)
        assert p.ci_low <= p.accuracy <= p.ci_high
        assert p.mean_latency == pytest.approx(sum(r.wall_seconds for r in rs) / 3)
    for r in records:
        assert r.wall_seconds > 0 and r.costs.seconds <= r.wall_seconds
        assert r.solution.problem.id == r.problem_id and r.gold == r.solution.problem.gold
    summary = json.loads((out / "summary.json").read_text())
    assert {p["config"] for p in summary["points"]} == set(by)
    assert "random" in summary["headline"]
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["config"] for r in rows} == set(by)
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "speedup at target-only accuracy" in report and "area score" in report and "random@0.5" in report
    assert any(p.pareto for p in points)


@pytest.mark.slow
def test_a_sweep_solving_side_by_side_writes_the_records_of_one_at_a_time(sweep, tmp_path):
    _, records, _ = sweep
    cfg = SweepConfig(dataset="synthetic", limit=3, seed=1, synthetic_steps=2,
                      policies=["draft-only", "target-only", "random"], thresholds=[0.5], limits=LIMITS, **PAIR,
                      concurrency=4, latency_profile="testbed-cpu")
    batched = run_sweep(cfg, tmp_path, progress=False)
    assert [r.key for r in batched] == [r.key for r in records]
    assert len(read_records(tmp_path / "records.jsonl")) == len(records)
    for a, b in zip(records, batched):
        assert (a.correct, a.answer) == (b.correct, b.answer)
        assert [s.text for s in a.solution.steps] == [s.text for s in b.solution.steps]
        assert a.costs.target.output_tokens == b.costs.target.output_tokens
        assert (a.concurrency, b.concurrency) == (1, 4)
    write_outputs(batched, tmp_path, cfg.draft, cfg.target, profile=read_profile("testbed-cpu"), n_boot=200)
    assert "solved up to 4 side by side" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_rerun_of_a_finished_sweep_adds_nothing(sweep):
    out, records, _ = sweep
    before = (out / "records.jsonl").read_bytes()
    cfg = SweepConfig(dataset="synthetic", limit=3, seed=1, synthetic_steps=2,
                      policies=["draft-only", "target-only", "random"], thresholds=[0.5], limits=LIMITS, **PAIR)
    again = run_sweep(cfg, out, progress=False)
    assert (out / "records.jsonl").read_bytes() == before
    assert sorted(r.key for r in again) == sorted(r.key for r in records)


@pytest.mark.slow
def test_a_different_run_into_the_same_folder_is_refused(sweep):
    out, _, _ = sweep
    cfg = SweepConfig(dataset="synthetic", limit=5, seed=1, policies=["draft-only"], limits=LIMITS, **PAIR)
    with pytest.raises(ConfigError, match="holds results of a different run"):
        run_sweep(cfg, out, progress=False)


@pytest.mark.slow
def test_killed_sweep_resumes_without_lost_or_duplicated_records(cli, tmp_path):
    """The one real kill: `specstep eval` in its own process, SIGKILL mid-run, then the same command again
    (in this process)."""
    out = tmp_path / "run"
    args = ["eval", "--dataset", "synthetic", "--limit", "4", "--policies", "draft-only,random",
            "--thresholds", "0.5", "--out", str(out), "--steps", "1", "--max-steps", "2", "--step-tokens", "32",
            "--draft", PAIR["draft"], "--target", PAIR["target"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "specstep.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = path.read_bytes()
    assert partial.count(b"\n") >= 2
    with path.open("ab") as f:  # and a torn line, as a crash mid-write leaves it
        f.write(b'{"schema_version": 1, "key": "synthe')
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    final = path.read_bytes()
    kept = partial[: partial.rfind(b"\n") + 1]
    assert final.startswith(kept)  # finished records were not rewritten
    recs = read_records(path)
    keys = [x.key for x in recs]
    assert len(keys) == 8 and len(set(keys)) == 8
    for name in ("summary.json", "summary.csv", "curve.png", "report.md"):
        assert (out / name).exists()


@pytest.mark.slow
def test_sweep_chooses_on_validation_problems_interleaves_and_resumes_with_repeats(tmp_path):
    from eval.latency import fit_profile, with_modeled_seconds
    from eval.select import choose
    from eval.summary import summarize

    cfg = SweepConfig(dataset="synthetic", limit=1, seed=2, policies=["draft-only", "target-only", "random"],
                      thresholds=[0.2, 0.9], limits={"max_steps": 1, "step_tokens": 24, "max_tokens": 48}, repeats=2,
                      select_limit=2, **PAIR)
    recs = run_sweep(cfg, tmp_path, progress=False)
    val, test = [r for r in recs if r.split == "val"], [r for r in recs if r.split == "test"]
    assert len(val) == 4 * 2 and {r.repeat for r in val} == {0}  # validation runs once
    assert all("-val-" in r.problem_id for r in val) and not any("-val-" in r.problem_id for r in test)
    # the test problem ran the references and the threshold chosen on the validation records only
    chosen = choose(summarize(with_modeled_seconds(val, fit_profile([r.solution for r in val], **PAIR))[0]))
    assert {(r.policy, r.threshold) for r in test} == {("draft-only", None), ("target-only", None),
                                                       ("random", float(chosen["random"].config.split("@")[1]))}
    assert len(test) == 3 * 2 and {r.repeat for r in test} == {0, 1}
    # greedy repeats write the same steps; keys tell them apart
    by_key = {r.key: r for r in recs}
    for r in test:
        if r.repeat == 1:
            twin = by_key[r.key.removesuffix("#1")]
            assert [s.text for s in r.solution.steps] == [s.text for s in twin.solution.steps]
    # interleaved: each (problem, repeat) runs every configuration in a row, not always in the same order
    stored = read_records(tmp_path / "records.jsonl")
    blocks = [stored[0:4], stored[4:8], stored[8:11], stored[11:14]]
    assert all(len({(r.problem_id, r.repeat) for r in b}) == 1 for b in blocks)
    assert len({tuple(r.key.split("|")[1].split("#")[0] for r in b) for b in blocks}) > 2
    # resume: nothing runs twice; a third repeat adds only repeat 2 of the test runs
    assert [r.key for r in run_sweep(cfg, tmp_path, progress=False)] == [r.key for r in recs]
    more = run_sweep(cfg.model_copy(update={"repeats": 3}), tmp_path, progress=False)
    assert len(more) == len(recs) + 3 and len(read_records(tmp_path / "records.jsonl")) == len(more)
    write_outputs(more, tmp_path, cfg.draft, cfg.target, n_boot=200)
    report = (tmp_path / "report.md").read_text()
    assert "Chosen on validation problems" in report and "modeled s" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {p["config"] for p in summary["points"]} == {"draft-only", "target-only", chosen["random"].config}
    assert all(p["n"] == 3 and p["mean_modeled"] > 0 for p in summary["points"])


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "gsm9k", "--policies", "draft-only"], "unknown dataset 'gsm9k'"),
    (["--dataset", "gsm8k", "--data-dir", "/no/such/dir", "--policies", "draft-only"], "/no/such/dir"),
    (["--dataset", "synthetic", "--policies", ""], "no policies given"),
    (["--dataset", "synthetic", "--policies", "draft-only,wizard"], "unknown policy 'wizard'"),
    (["--dataset", "synthetic", "--policies", "random", "--thresholds", "0.5,x"], "--thresholds takes"),
    (["--dataset", "synthetic", "--policies", "random", "--thresholds", "3"], "out of range"),
    (["--dataset", "synthetic", "--policies", "random", "--concurrency", "0"],
     "--concurrency must be at least 1, got 0"),
    (["--dataset", "synthetic", "--policies", "random", "--concurrency", "4"], "give --latency-profile"),
])
def test_eval_bad_input_gives_one_line_and_exit_code_2(cli, tmp_path, args, msg):
    r = cli("eval", *args, "--out", str(tmp_path / "o"), "--limit", "2")
    assert r.returncode == 2, r.stderr
    assert msg in r.error_line()
    assert not (tmp_path / "o").exists()  # refused before anything is written


def _pt(policy, acc, lat, esc, thr=None):
    return Point(config=f"{policy}@{thr}", policy=policy, threshold=thr, escalation_rate_goal=None, n=10,
                 correct=round(acc * 10), accuracy=acc, ci_low=0, ci_high=1, mean_latency=lat, p90_latency=lat,
                 target_token_share=esc, escalation_rate=esc, wasted_escalations=0, format_failures=0, seconds={})


def test_summary_math():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson(0, 0) == (0.0, 0.0)
    pts = [_pt("p", 0.2, 1.0, 0.1, 0.1), _pt("p", 0.5, 2.0, 0.5, 0.5), _pt("p", 0.4, 3.0, 0.9, 0.9)]
    assert [p.mean_latency for p in pareto(pts)] == [1.0, 2.0]
    assert latency_at_accuracy(pts, 0.35) == pytest.approx(1.5)
    assert latency_at_accuracy(pts, 0.6) is None
    # draft 0.2, target 0.6: gap recovered 0, 0.75, 0.5 at escalation 0.1, 0.5, 0.9 (plus the two ends)
    area = area_score(pts, 0.2, 0.6)
    xs, ys = [0, 0.1, 0.5, 0.9, 1], [0, 0, 0.75, 0.5, 1]
    assert area == pytest.approx(sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(4)))
    assert area_score(pts, 0.5, 0.5) is None
    assert area_score(pts, 0.6, 0.2) is None  # target-only worse than draft-only: no gap to recover


@pytest.mark.slow
def test_record_round_trip(sweep):
    _, records, _ = sweep
    r = records[0]
    assert EvalRecord.model_validate_json(r.model_dump_json()) == r
