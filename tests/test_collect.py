"""`specstep collect`: trace records from the oracle behaviour policy, with the real bundled models."""

import json

import pytest

from eval.synthetic import generate
from reasoning import ConfigError
from routers.base import same_step, target_better
from routers.features import FEATURE_NAMES, FEATURE_VERSION
from specstep.cli import main
from training.collect import (
    CONFIG_FILE,
    DONE_FILE,
    TRACES_FILE,
    collect,
    make_config,
    read_done,
    read_traces,
)
from training.traces import TargetSample, TraceRecord

PAIR = {"draft": "testbed-draft", "target": "testbed-target"}
SMALL = {"dataset": "synthetic", "limit": 2, "synthetic_steps": 1, "max_steps": 3, "step_tokens": 32, **PAIR}


def records(path):
    return [TraceRecord.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]


def check_records(recs, k):
    assert recs
    by_problem: dict[str, list[TraceRecord]] = {}
    for r in recs:
        by_problem.setdefault(r.problem_id, []).append(r)
    for pid, rs in by_problem.items():
        assert [r.step_index for r in rs] == list(range(rs[0].n_steps)), pid
        for r in rs:
            assert r.n_steps == len(rs)
            assert len(r.targets) == k
            assert 0.0 <= r.draft_score <= 1.0 and all(0.0 <= t.score <= 1.0 for t in r.targets)
            assert r.target_score == pytest.approx(sum(t.score for t in r.targets) / k)
            assert r.advantage == pytest.approx(r.target_score - r.draft_score)
            assert r.label == target_better(r.target_score, r.draft_score)  # ties (within tolerance) keep the draft
            assert r.behaviour_author == ("target" if r.label else "draft")  # oracle, tau = 0
            assert r.history == [x.behaviour_author for x in rs[: r.step_index]]
            assert len(r.features) == len(FEATURE_NAMES) and tuple(r.feature_names) == FEATURE_NAMES
            assert r.feature_version == FEATURE_VERSION
            assert r.features[FEATURE_NAMES.index("step_index")] == r.step_index
            assert set(r.seconds) == {"draft", "judge", "target"} and all(v > 0 for v in r.seconds.values())
            assert r.draft_text and r.draft_tokens > 0 and all(t.tokens > 0 for t in r.targets)
            assert (r.judge, r.draft_model, r.target_model) == ("specreason", "testbed-draft", "testbed-target")
    return by_problem


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def greedy(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect")
    summary = collect(make_config(**SMALL), out, progress=False)
    return out, summary


@pytest.mark.slow
def test_greedy_collection_writes_valid_consistent_records(greedy):
    out, summary = greedy
    recs = records(out / TRACES_FILE)
    by_problem = check_records(recs, k=1)
    assert set(by_problem) == {"synthetic-s1-0-0000", "synthetic-s1-0-0001"}
    assert read_done(out / DONE_FILE) == sorted(by_problem)
    assert summary.n_problems == 2 and summary.n_collected == 2 and summary.n_skipped == 0
    assert summary.n_records == summary.n_new_records == len(recs)
    assert summary.label_share == pytest.approx(sum(r.label for r in recs) / len(recs))
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["identity"] == make_config(**SMALL).identity()


@pytest.mark.slow
def test_a_collection_side_by_side_writes_the_records_of_one_at_a_time(greedy, tmp_path):
    out, _ = greedy
    summary = collect(make_config(**SMALL), tmp_path, progress=False, concurrency=2)
    assert summary.n_collected == 2

    def key(r):
        return (r.problem_id, r.step_index)

    one = sorted(records(out / TRACES_FILE), key=key)
    two = sorted(records(tmp_path / TRACES_FILE), key=key)
    assert len(one) == len(two)
    for a, b in zip(one, two):  # the same steps and labels; scores and features up to batched rounding
        assert (key(a), a.draft_text, a.draft_tokens, [t.text for t in a.targets], a.label, a.behaviour_author) == \
            (key(b), b.draft_text, b.draft_tokens, [t.text for t in b.targets], b.label, b.behaviour_author)
        assert b.draft_score == pytest.approx(a.draft_score, abs=1e-4)
        assert b.target_score == pytest.approx(a.target_score, abs=1e-4)
        assert b.features == pytest.approx(a.features, rel=1e-3, abs=1e-4)
    assert sorted(read_done(tmp_path / DONE_FILE)) == sorted(read_done(out / DONE_FILE))


@pytest.mark.slow
def test_rerun_of_a_finished_collection_adds_nothing(greedy):
    out, _ = greedy
    before = {name: (out / name).read_bytes() for name in (TRACES_FILE, DONE_FILE, CONFIG_FILE)}
    again = collect(make_config(**SMALL), out, progress=False)
    assert again.n_collected == 0 and again.n_skipped == 2 and again.n_new_records == 0
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("change", [{"limit": 3}, {"seed": 1}, {"target_samples": 2, "temperature": 0.7},
                                    {"max_steps": 4}, {"draft": "gemma3-270m"},
                                    {"limits": {"repeat": "consecutive"}}])
@pytest.mark.slow
def test_a_different_config_into_the_same_folder_is_refused(greedy, change):
    out, _ = greedy
    with pytest.raises(ConfigError, match="holds traces of a different collection") as e:
        collect(make_config(**{**SMALL, **change}), out, progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_sampled_targets_k2(tmp_path):
    cfg = make_config(**{**SMALL, "limit": 1, "max_steps": 2, "step_tokens": 24, "target_samples": 2,
                         "temperature": 0.9})
    collect(cfg, tmp_path, progress=False)
    check_records(records(tmp_path / TRACES_FILE), k=2)


@pytest.mark.slow
def test_behaviour_policy_steps_and_accounting():
    """The solution follows the labels, uses the first target sample, and pays for every call."""
    from reasoning.api import Solver
    from training.collect import CollectingOracle

    router = CollectingOracle(target_samples=2, temperature=0.9, seed=3)
    solver = Solver(**PAIR, router=router, max_steps=2, step_tokens=24, force_answer=False)
    sol = solver.solve(generate(1, steps=2, seed=5, split="train")[0])
    traces = router.traces
    assert [t.step_index for t in traces] == [s.index for s in sol.steps] and traces
    for t, step in zip(traces, sol.steps):
        assert step.author == ("target" if t.label else "draft") and step.draft_text == t.draft_text
        assert step.text == (t.targets[0].text if t.label else t.draft_text)
        assert step.score == t.draft_score and step.target_score == t.targets[0].score
    n, esc = len(sol.steps), sum(t.label for t in traces)
    assert sol.costs.draft.calls == n and sol.costs.target.calls == n  # K samples in one batched call
    again = CollectingOracle(target_samples=2, temperature=0.9, seed=3)
    Solver(**PAIR, router=again, max_steps=2, step_tokens=24, force_answer=False).solve(
        generate(1, steps=2, seed=5, split="train")[0])
    assert [[x.text for x in t.targets] for t in again.traces] == [[x.text for x in t.targets] for t in traces]
    # the draft's step is judged once; a target sample that repeats it word for word is a tie, not judged
    judged = sum(not same_step(x.text, t.draft_text) for t in traces for x in t.targets)
    assert sol.costs.judge.calls == n + judged and sol.costs.discarded.calls == esc
    assert sol.costs.target.output_tokens == sum(x.tokens for t in traces for x in t.targets)


def _record(pid, step, n, label=False):
    return TraceRecord(
        dataset="synthetic", problem_id=pid, step_index=step, n_steps=n, history=["draft"] * step,
        draft_text="x", draft_tokens=1, draft_score=0.5,
        targets=[TargetSample(text="y", tokens=1, score=0.6 if label else 0.4, seconds=0.1)],
        target_score=0.6 if label else 0.4, advantage=0.1 if label else -0.1, label=label,
        behaviour_author="target" if label else "draft", features=[0.0] * len(FEATURE_NAMES),
        feature_names=list(FEATURE_NAMES), feature_version=FEATURE_VERSION, judge="specreason",
        draft_model="smollm2-135m", target_model="gemma3-270m", seconds={"draft": 0.1, "judge": 0.1, "target": 0.1})


def _lines(recs):
    return b"".join((r.model_dump_json() + "\n").encode() for r in recs)


def test_repair_cuts_torn_line_and_problems_cut_short(tmp_path):
    path = tmp_path / TRACES_FILE
    good = _lines([_record("a", 0, 2), _record("a", 1, 2, True)]) + _lines([_record("c", 0, 1)])
    short = _lines([_record("b", 0, 3), _record("b", 1, 3)])
    path.write_bytes(_lines([_record("a", 0, 2), _record("a", 1, 2, True)]) + short + _lines([_record("c", 0, 1)])
                     + b'{"schema_version": 1, "dataset": "synth')
    recs = read_traces(path)
    assert [(r.problem_id, r.step_index) for r in recs] == [("a", 0), ("a", 1), ("c", 0)]
    assert path.read_bytes() == good and not (tmp_path / (TRACES_FILE + ".tmp")).exists()
    assert read_traces(path) == recs and path.read_bytes() == good
    done = tmp_path / DONE_FILE
    done.write_bytes(b'"a"\n"c"\n"synth')
    assert read_done(done) == ["a", "c"] and done.read_bytes() == b'"a"\n"c"\n'
    path.write_bytes(good + _lines([_record("a", 1, 2)]))
    with pytest.raises(ConfigError, match="duplicated or inconsistent"):
        read_traces(path)


def test_complete_records_without_done_entry_count_as_done(tmp_path):
    """A crash after a problem's records but before done.txt: the problem is not solved again."""
    cfg = make_config(**{**SMALL, "limit": 1})
    out = tmp_path / "o"
    out.mkdir()
    (out / CONFIG_FILE).write_text(json.dumps({"identity": cfg.identity()}))
    data = _lines([_record("synthetic-s1-0-0000", 0, 1)])
    (out / TRACES_FILE).write_bytes(data)
    s = collect(cfg, out, progress=False)  # nothing to do: no model is loaded
    assert s.n_skipped == 1 and s.n_collected == 0 and s.n_records == 1
    assert (out / TRACES_FILE).read_bytes() == data
    assert read_done(out / DONE_FILE) == ["synthetic-s1-0-0000"]


@pytest.mark.slow
def test_a_crashed_collection_resumes_without_lost_or_duplicated_records(cli, greedy, tmp_path):
    """A crash after the first problem's records, mid-write of the next line, before done.txt: `specstep
    collect` again keeps what was written, adds the rest once, and ends as the uninterrupted run.
    (A real kill of the process is tested on `specstep eval`, tests/test_eval_sweep.py.)"""
    finished, _ = greedy
    out = tmp_path / "run"
    out.mkdir()
    (out / CONFIG_FILE).write_bytes((finished / CONFIG_FILE).read_bytes())
    lines = (finished / TRACES_FILE).read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])["problem_id"]
    kept = b"".join(ln for ln in lines if json.loads(ln)["problem_id"] == first)
    (out / TRACES_FILE).write_bytes(kept + b'{"schema_version": 1, "dataset": "synthetic", "problem_id": "synth')
    args = ["collect", "--dataset", "synthetic", "--limit", "2", "--steps", "1", "--out", str(out),
            "--max-steps", "3", "--step-tokens", "32", "--draft", PAIR["draft"], "--target", PAIR["target"]]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "1 problems were already done" in r.stdout
    final = (out / TRACES_FILE).read_bytes()
    assert final.startswith(kept) and len(final) > len(kept)  # kept as written; the rest added
    recs = records(out / TRACES_FILE)
    keys = [(x.problem_id, x.step_index) for x in recs]
    assert len(keys) == len(set(keys))
    by_problem = check_records(recs, k=1)
    assert set(read_done(out / DONE_FILE)) == set(by_problem) == {"synthetic-s1-0-0000", "synthetic-s1-0-0001"}
    # greedy: the same steps as the uninterrupted run
    strip = [(x.problem_id, x.step_index, x.draft_text, [t.text for t in x.targets], x.label) for x in recs]
    assert strip == [(x.problem_id, x.step_index, x.draft_text, [t.text for t in x.targets], x.label)
                     for x in records(finished / TRACES_FILE)]
    assert cli(*args).returncode == 0 and (out / TRACES_FILE).read_bytes() == final  # nothing left to do


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "gsm9k"], "unknown dataset 'gsm9k'"),
    (["--dataset", "gsm8k", "--data-dir", "/no/such/dir"], "/no/such/dir"),
    (["--dataset", "synthetic", "--target-samples", "0"], "--target-samples"),
    (["--dataset", "synthetic", "--temperature", "-1"], "--temperature"),
    (["--dataset", "synthetic", "--temperature", "nan"], "--temperature"),
    (["--dataset", "synthetic", "--target-samples", "2"], "temperature above 0"),
    (["--dataset", "synthetic", "--judge", "crystal-ball"], "unknown judge 'crystal-ball'"),
    (["--dataset", "synthetic", "--limit", "0"], "--limit must be at least 1"),
    (["--dataset", "synthetic", "--concurrency", "0"], "--concurrency must be at least 1, got 0"),
    (["--dataset", "synthetic", "--draft", "no-such-model-alias"], "no-such-model-alias"),
    (["--dataset", "synthetic", "--preset", "r9"], "unknown preset 'r9'"),
    (["--dataset", "synthetic", "--config", "/no/such.toml"], "config file /no/such.toml"),
])
def test_collect_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, args, msg):
    out = tmp_path / "o"
    assert main(["collect", *args, "--out", str(out), "--limit", "2"] if "--limit" not in args
                else ["collect", *args, "--out", str(out)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0], lines
    assert not out.exists()  # nothing is written before the config is known to be good


def test_collect_into_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["collect", "--dataset", "synthetic", "--limit", "1", "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a file" in err


def test_the_solves_options_join_a_collections_identity_only_where_set(tmp_path):
    """A preset's options (and --think, --no-system-prompt, ...) reach every solve and are part of the
    folder's identity; a collection without them has the identity it had before they were options."""
    from specstep.cli import main as cli_main
    from training.collect import _limits

    plain = make_config(**SMALL)
    assert "limits" not in plain.identity()
    thinking = make_config(**SMALL, limits={"system_prompt": False, "repeat": "consecutive"})
    assert thinking.identity()["limits"] == {"system_prompt": False, "repeat": "consecutive"}
    assert _limits(thinking)["system_prompt"] is False and _limits(thinking)["force_answer"] is False
    out = tmp_path / "o"
    # the preset's solve options pass the checks and then the (missing) model is reported: no folder written
    assert cli_main(["collect", "--dataset", "synthetic", "--limit", "1", "--preset", "qwq", "--draft",
                     "no-such-model-alias", "--out", str(out)]) == 2
    assert not out.exists()
