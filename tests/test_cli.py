import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning.types import Solution


@pytest.mark.parametrize("args,msg", [
    (["solve", ""], "the question is empty"),
    (["solve", "2+2?", "--draft", "bogus-model"], "unknown model spec 'bogus-model'"),
    (["solve", "2+2?", "--target", "/no/such/file.gguf"], "model file not found: /no/such/file.gguf"),
    (["solve", "2+2?", "--threshold", "abc"], "threshold must be a number, got 'abc'"),
    (["solve", "2+2?", "--threshold", "nan"], "threshold must be a finite number"),
    (["solve", "2+2?", "--router", "random", "--threshold", "2"], "threshold 2.0 is out of range"),
    (["solve", "2+2?", "--router", "nope"], "unknown router 'nope'"),
    (["solve", "2+2?", "--max-steps", "-1"], "bad value for max_steps"),
    (["solve", "2+2?", "--top-p", "0"], "bad value for top_p"),
    (["eval", "--dataset", "synthetic", "--policies", "target-only", "--out", "x", "--top-k", "-1"],
     "bad value for top_k"),
    (["solve", "2+2?", "--min-p", "2"], "bad value for min_p"),
    (["solve", "2+2?", "--draft", "openai:m?base_url=ftp://x", "--router", "draft-only"], "is not an http(s) URL"),
    (["solve", "2+2?", "--draft", "llamacpp:./missing.gguf", "--router", "draft-only"], "model file not found"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["testbed", "train", "--recipe", "v2"], "--recipe v2 needs --out DIR: the default folder holds the shipped"),
    (["testbed", "train", "--recipe", "v3-written"], "--recipe v3-written needs --out DIR: the default folder"),
    (["testbed", "train", "--recipe", "v3-focus"], "--recipe v3-focus needs --out DIR: the default folder"),
    (["testbed", "train", "--recipe", "v2-written"], "--recipe v2-written needs --out DIR: the default folder"),
    (["testbed", "train", "--recipe", "v9", "--out", "x"], "Invalid value for '--recipe'"),
    (["solve", "2+2?", "--router", "specreason", "--threshold", "1.5"], "out of range for router 'specreason'"),
    (["solve", "2+2?", "--router", "specreason", "--judge", "crystal"], "unknown judge 'crystal'"),
    (["solve", "2+2?", "--router", "random", "--router-opt", "seed"], "--router-opt takes KEY=VALUE, got 'seed'"),
    (["solve", "2+2?", "--router", "rsd"], "judge 'prm' needs option model="),
    (["solve", "2+2?", "--router", "rsd", "--judge-opt", "model=/nowhere", "--judge-opt", "style=value"],
     "/nowhere"),
    # the target's option is checked before the draft loads
    (["solve", "2+2?", "--target", "testbed-target?device=gpu0"],
     "device must be cpu, cuda, cuda:N or mps; got 'gpu0'"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "testbed-draft?dtype=float64"], "dtype must be one of"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "hf:.?init=random"],
     "init=random needs a directory with a config.json"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "hf:.?init=zeros"], "init must be random"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "vllm:smollm2-135m?gpu_memory_utilization=1.5"],
     "gpu_memory_utilization is the share of the GPU's memory the engine takes, in (0, 1]; got '1.5'"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "vllm:smollm2-135m?engine=sync"],
     "engine must be offline or async, got 'sync'"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "vllm:smollm2-135m?devices=1"],
     "devices= needs engine=async (an engine process of its own)"),
    (["solve", "2+2?", "--router", "draft-only", "--draft", "vllm:smollm2-135m?engine=async&devices=gpu1"],
     "devices must be GPU indices like 0 or 2,3; got 'gpu1'"),
    (["solve", "2+2?", "--router", "rsd", "--judge-opt", "model=/nowhere", "--judge-opt", "style=value",
      "--judge-opt", "device=tpu"], "bad option device='tpu'"),
])
def test_bad_input_gives_one_line_and_exit_code_2(cli, args, msg):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert msg in r.error_line()


@pytest.mark.slow
def test_solve_json_prints_the_solution_record(cli):
    r = cli("solve", "--example", "--router", "draft-only", "--max-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    sol = Solution.model_validate_json(r.stdout)
    assert sol.config.router == "draft-only" and 1 <= len(sol.steps) <= 3
    assert json.loads(r.stdout)["schema_version"] == 1


@pytest.mark.slow
def test_solve_prints_steps_with_authors_and_a_cost_table(cli):
    r = cli("solve", "--example", "--draft", "testbed-draft", "--target", "testbed-target", "--router", "random",
            "--threshold", "0.5", "--max-steps", "3", "--step-tokens", "48")
    assert r.returncode == 0, r.stderr
    assert "[draft" in r.stdout and "[target" in r.stdout  # random at 0.5 on this example: both write
    for word in ("Answer:", "cost per stage", "draft", "judge", "router", "target", "thrown away",
                 "draft acceptance", "The testbed pair: tiny models"):
        assert word in r.stdout
    r = cli("solve", "What is 2 + 3?", "--router", "draft-only", "--max-steps", "1", "--step-tokens", "16")
    assert r.returncode == 0 and "The bundled models are tiny" in r.stdout, r.stderr


def test_models_lists_the_bundled_aliases(cli):
    r = cli("models")
    assert r.returncode == 0 and "smollm2-135m" in r.stdout and "gemma3-270m" in r.stdout


POLICY = {"--draft", "--target", "--router", "--threshold", "--escalation-rate", "--router-opt", "--judge",
          "--judge-opt", "--max-steps", "--max-tokens", "--step-tokens", "--few-shot"}
RUN = {"--dataset", "--data-dir", "--limit", "--out", "--judge", "--judge-opt", "--draft", "--target", "--seed",
       "--steps", "--split", "--max-steps", "--max-tokens", "--step-tokens", "--few-shot"}
PRESET = {"--preset", "--config", "--system-prompt", "--repeat"}  # and --no-system-prompt
FLAGS = {  # every command and flag of the argparse CLI before the port to typer, and those added since
    ("solve",): POLICY | PRESET | {"--example", "--temperature", "--top-p", "--top-k", "--min-p", "--seed", "--think",
                                   "--json"},
    ("eval",): RUN | PRESET | {"--policies", "--thresholds", "--escalation-rates", "--router-opt", "--repeats",
                               "--select-limit", "--select-margin", "--latency-profile", "--bootstrap", "--concurrency",
                               "--temperature", "--top-p", "--top-k", "--min-p", "--think"},
    ("report",): {"--latency-profile", "--bootstrap"},
    ("train-router",): {"--traces", "--out", "--model", "--seed", "--test-fraction", "--no-balance"},
    ("collect",): RUN | PRESET | {"--target-samples", "--temperature", "--concurrency", "--think"},
    ("models",): set(),
    ("verdict",): {"--image", "--experts", "--samples", "--verdict-model", "-m", "--temperature", "--seed",
                   "--max-tokens", "--path-tokens", "--skip-on-agreement", "--few-shot", "--json"},
    ("serve",): POLICY | PRESET | {"--think", "--host", "--port", "--model-name", "--api-key-env", "--api-key",
                          "--max-concurrency"},
    ("testbed", "train"): {"--out", "--only", "--seed", "--target-steps", "--draft-steps", "--batch", "--resume",
                            "--recipe", "--keep-phases"},
}


def test_every_command_and_flag_is_kept():
    import typer

    from specstep.cli import app

    group = typer.main.get_command(app)
    assert {opt for p in group.params for opt in p.opts} - {"--help"} == {"-v", "--verbose", "--version"}
    found = {}
    for name, command in group.commands.items():
        for sub, leaf in (getattr(command, "commands", None) or {None: command}).items():
            found[(name,) if sub is None else (name, sub)] = {o for p in leaf.params for o in p.opts
                                                              if o.startswith("-")} - {"--help"}
    assert found == FLAGS


def test_version_and_help_exit_0(cli):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("specstep ")
    r = cli("eval", "--help")
    assert r.returncode == 0 and "--escalation-rates" in r.stdout and "--policies" in r.stdout


def test_the_console_script_is_the_entry_point():
    """The installed `specstep` script runs the CLI in its own process: a version, and a user error."""
    script = Path(sys.executable).with_name("specstep")
    exe = [str(script)] if script.exists() else [shutil.which("specstep") or "specstep"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.startswith("specstep "), r.stderr
    r = subprocess.run([*exe, "solve", ""], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.strip() == "specstep: error: the question is empty: give a question, " \
        "or --example", r.stderr


@pytest.mark.slow
def test_eval_passes_sampling_to_every_solve(cli, tmp_path):
    """At temperature 2, top_k=1 answers as greedy decoding does; the run's limits record the settings."""
    run = ["eval", "--dataset", "synthetic", "--steps", "2", "--limit", "3", "--policies", "target-only",
           "--draft", "testbed-draft", "--target", "testbed-target", "--max-steps", "6", "--max-tokens", "256",
           "--step-tokens", "64"]
    assert cli(*run, "--out", str(tmp_path / "greedy")).returncode == 0
    r = cli(*run, "--out", str(tmp_path / "topk"), "--temperature", "2", "--top-k", "1")
    assert r.returncode == 0, r.stderr

    def answers(folder):
        recs = [json.loads(x) for x in (tmp_path / folder / "records.jsonl").read_text().splitlines()]
        return [(x["problem_id"], x["answer"], [s["text"] for s in x["solution"]["steps"]]) for x in recs]

    assert answers("topk") == answers("greedy")
    cfg = json.loads((tmp_path / "topk" / "run.json").read_text())
    assert "temperature" in json.dumps(cfg) and '"top_k": 1' in json.dumps(cfg)

