"""`reasoning.jsonl`: durable append, torn-line repair, run-folder identity, and the files that use it
(eval records, the sweep's run.json, collect's traces and done.txt, train-router's reading). No models."""

import json
import logging
import os
import stat

import pytest
from pydantic import BaseModel

from reasoning import jsonl
from reasoning.errors import ConfigError


class Rec(BaseModel):
    key: str
    n: int


def parse(raw: bytes) -> Rec:
    return Rec.model_validate_json(raw)


def read(path, **kw):
    return jsonl.read(path, parse, "not a valid record", **kw)


def test_append_writes_one_line_per_record_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    path = tmp_path / "r.jsonl"
    jsonl.append(path, Rec(key="a", n=1))
    jsonl.append(path, [Rec(key="b", n=2), {"key": "c", "n": 3}])  # a list: one write call
    jsonl.append(path, "an id")
    assert path.read_bytes() == b'{"key":"a","n":1}\n{"key":"b","n":2}\n{"key": "c", "n": 3}\n"an id"\n'
    assert len(synced) == 3
    with jsonl.Appender(path) as w:
        w.write(Rec(key="d", n=4))
    assert len(synced) == 4 and path.read_bytes().endswith(b'{"key":"d","n":4}\n')


def test_missing_file_reads_as_empty(tmp_path):
    got = read(tmp_path / "none.jsonl")
    assert got.values == [] and got.torn == 0 and not (tmp_path / "none.jsonl").exists()


def test_torn_last_line_is_cut_and_every_complete_record_kept(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    good = b"".join(jsonl.line(Rec(key=k, n=i)) for i, k in enumerate("abc"))
    path.write_bytes(good + b"\n" + b'{"key": "d", "n')  # a blank line, then a crash mid-write
    with caplog.at_level(logging.WARNING, logger="reasoning.jsonl"):
        got = read(path)
    assert [r.key for r in got.values] == ["a", "b", "c"] and got.torn == len(b'{"key": "d", "n')
    assert [x.number for x in got.lines] == [1, 2, 3]
    assert path.read_bytes() == good + b"\n"  # only the partial line went
    assert "torn last line" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reasoning.jsonl"):
        assert read(path).values == got.values and read(path).torn == 0
    assert not caplog.text


def test_complete_last_record_without_newline_is_kept_and_terminated(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(jsonl.line(Rec(key="a", n=1)) + b'{"key":"b","n":2}')
    assert [r.key for r in read(path).values] == ["a", "b"]
    assert path.read_bytes().endswith(b'{"key":"b","n":2}\n')
    jsonl.append(path, Rec(key="c", n=3))  # starts its own line
    assert [r.key for r in read(path).values] == ["a", "b", "c"]


def test_whitespace_tail_is_cut(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(jsonl.line(Rec(key="a", n=1)) + b"  ")
    got = read(path)
    assert [r.key for r in got.values] == ["a"] and got.torn == 2
    assert path.read_bytes() == jsonl.line(Rec(key="a", n=1))


def test_resume_after_repair_does_not_duplicate(tmp_path):
    """A run that appends every key it has not yet got, killed mid-write, then run again."""
    path = tmp_path / "r.jsonl"
    keys = [f"k{i}" for i in range(6)]

    def run(stop_after=None):
        done = {r.key for r in read(path).values}
        for i, k in enumerate(x for x in keys if x not in done):
            if stop_after is not None and i == stop_after:
                with path.open("ab") as f:  # the crash: half a line
                    f.write(jsonl.line(Rec(key=k, n=0))[:7])
                return
            jsonl.append(path, Rec(key=k, n=0))

    run(stop_after=3)
    run()
    run()
    got = [r.key for r in read(path).values]
    assert got == keys


def test_a_bad_complete_line_is_one_error_and_changes_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    data = jsonl.line(Rec(key="a", n=1)) + b"garbage\n" + b'{"key": "c'
    path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        read(path)
    assert str(e.value) == f"{path}:2: not a valid record"
    assert path.read_bytes() == data
    with pytest.raises(ConfigError, match=r":2: bad: ValidationError"):
        jsonl.read(path, parse, lambda err: f"bad: {type(err).__name__}")


def test_without_repair_the_file_is_never_changed(tmp_path):
    path = tmp_path / "r.jsonl"
    data = jsonl.line(Rec(key="a", n=1)) + b'{"key":"b","n":2}'
    path.write_bytes(data)
    assert [r.key for r in read(path, repair=False).values] == ["a", "b"] and path.read_bytes() == data
    path.write_bytes(data[:-3])
    with pytest.raises(ConfigError, match=":2: not a valid record"):
        read(path, repair=False)
    assert path.read_bytes() == data[:-3]


def test_replace_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    jsonl.replace(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_identity_check(tmp_path):
    path = tmp_path / "run.json"
    ident = {"dataset": "synthetic", "limits": {"max_steps": 3}, "pair": ("a", "b")}
    kw = {"differs": "another run: use a new --out folder", "unreadable": "not a run file"}
    assert jsonl.check_identity(path, ident, **kw) is False
    jsonl.write_identity(path, ident, config={"x": 1})
    assert json.loads(path.read_text()) == {"identity": {**ident, "pair": ["a", "b"]}, "config": {"x": 1}}
    assert jsonl.check_identity(path, ident, **kw) is True  # tuples compare as the lists they read back as
    with pytest.raises(ConfigError) as e:
        jsonl.check_identity(path, {**ident, "limits": {"max_steps": 4}}, **kw)
    assert str(e.value) == "another run: use a new --out folder"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="another run"):
        jsonl.check_identity(path, ident, **kw)
    path.write_bytes(b"{not json")
    with pytest.raises(ConfigError, match="not a run file"):
        jsonl.check_identity(path, ident, **kw)


# ---------------------------------------------------------------- the files that use it


def test_eval_records_repair_and_error(tmp_path):
    from eval.records import RecordWriter, read_records

    path = tmp_path / "records.jsonl"
    assert read_records(path) == []
    path.write_bytes(b"\n" + b'{"schema_version": 1, "key": "synthe')
    assert read_records(path) == [] and path.read_bytes() == b"\n"
    assert issubclass(RecordWriter, jsonl.Appender)
    path.write_bytes(b"{}\n\n")
    with pytest.raises(ConfigError, match=r"records.jsonl:1: not a valid evaluation record$"):
        read_records(path)


def test_sweep_refuses_another_run_and_a_broken_run_file(tmp_path):
    from eval.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(dataset="synthetic", limit=1, policies=["draft-only"], limits={"max_steps": 2})
    (tmp_path / "run.json").write_text(json.dumps({"identity": {**cfg.identity(), "seed": 5}}))
    with pytest.raises(ConfigError, match="holds results of a different run .*: use a new --out folder"):
        run_sweep(cfg, tmp_path, progress=False)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(ConfigError, match="run.json is not a run file"):
        run_sweep(cfg, tmp_path, progress=False)


def _trace(pid, step, n):
    from routers.features import FEATURE_NAMES, FEATURE_VERSION
    from training.traces import TargetSample, TraceRecord

    return TraceRecord(
        dataset="synthetic", problem_id=pid, step_index=step, n_steps=n, history=["draft"] * step, draft_text="x",
        draft_tokens=1, draft_score=0.5, targets=[TargetSample(text="y", tokens=1, score=0.4, seconds=0.1)],
        target_score=0.4, advantage=-0.1, label=False, behaviour_author="draft",
        features=[0.0] * len(FEATURE_NAMES), feature_names=list(FEATURE_NAMES), feature_version=FEATURE_VERSION,
        judge="specreason", draft_model="smollm2-135m", target_model="gemma3-270m", seconds={})


def test_collect_traces_and_done_file(tmp_path):
    from training.collect import Repair, read_done, read_traces

    path = tmp_path / "traces.jsonl"
    a = jsonl.line(_trace("a", 0, 2)) + jsonl.line(_trace("a", 1, 2))
    short = jsonl.line(_trace("b", 0, 3))
    c = jsonl.line(_trace("c", 0, 1))
    path.write_bytes(a + short + b"\n" + c + b'{"schema_version": 1, "dataset": "synth')
    rep = Repair()
    recs = read_traces(path, rep)
    assert [(r.problem_id, r.step_index) for r in recs] == [("a", 0), ("a", 1), ("c", 0)]
    assert (rep.torn_lines, rep.removed_records, rep.removed_problems) == (1, 1, ["b"])
    assert path.read_bytes() == a + c and [p.name for p in tmp_path.iterdir()] == ["traces.jsonl"]
    path.write_bytes(a + c[:-1])  # complete, only the newline missing
    assert len(read_traces(path)) == 3 and path.read_bytes() == a + c
    path.write_bytes(a + b"nope\n")
    with pytest.raises(ConfigError, match=r"traces.jsonl:3: not a valid trace record$"):
        read_traces(path)

    done = tmp_path / "done.txt"
    done.write_bytes(b'"a"\n"c"\n"synth')
    assert read_done(done) == ["a", "c"] and done.read_bytes() == b'"a"\n"c"\n'
    done.write_bytes(b'"a"\n3\n')
    with pytest.raises(ConfigError, match=r"done.txt:2: not a problem id \(a JSON string\)$"):
        read_done(done)


def test_collect_folder_identity(tmp_path):
    from training.collect import CONFIG_FILE, TRACES_FILE, collect, make_config

    cfg = make_config(dataset="synthetic", limit=1, synthetic_steps=1, max_steps=2)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"identity": {**cfg.identity(), "seed": 9}}))
    with pytest.raises(ConfigError, match="holds traces of a different collection"):
        collect(cfg, tmp_path, progress=False)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(ConfigError, match=f"{CONFIG_FILE} is not a collect config: use a new --out folder"):
        collect(cfg, tmp_path, progress=False)
    (tmp_path / CONFIG_FILE).unlink()
    (tmp_path / TRACES_FILE).write_bytes(b"")
    with pytest.raises(ConfigError, match=f"holds traces without {CONFIG_FILE}"):
        collect(cfg, tmp_path, progress=False)


def test_train_router_reads_traces_without_changing_them(tmp_path):
    from training.train import _read_records

    path = tmp_path / "traces.jsonl"
    good = jsonl.line(_trace("a", 0, 1))
    path.write_bytes(good + b'{"problem_id": "x"\n')
    with pytest.raises(ConfigError, match=r"traces.jsonl:2: not valid JSON \(Expecting ',' delimiter, column 19\)"):
        _read_records(path)
    path.write_bytes(good + b'{"problem_id": "x"')  # a torn last line is an error here, and stays
    with pytest.raises(ConfigError, match="traces.jsonl:2: not valid JSON"):
        _read_records(path)
    assert path.read_bytes() == good + b'{"problem_id": "x"'
    bad = json.loads(good)
    bad["label"] = "maybe"
    path.write_bytes(good + json.dumps(bad).encode() + b"\n")
    with pytest.raises(ConfigError, match="traces.jsonl:2: not a valid trace record: label"):
        _read_records(path)
    path.write_bytes(good + b"caf\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        _read_records(path)
    path.write_bytes(good + good[:-1])
    assert [n for n, _ in _read_records(path)] == [1, 2] and path.read_bytes() == good + good[:-1]
