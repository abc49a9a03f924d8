"""`reasoning.options`: the API, the CLI and the server take the solve defaults from one model. No models load."""

import inspect
from types import SimpleNamespace

import pytest

from reasoning.errors import ConfigError, SpecstepError
from reasoning.options import (
    DEFAULT_DRAFT,
    DEFAULT_LIMITS,
    DEFAULT_ROUTER,
    DEFAULT_TARGET,
    SWEEP_LIMITS,
    Limits,
    make_limits,
)
from specstep import cli

BUDGETS = ("max_steps", "max_tokens", "step_tokens", "few_shot")


class NoModels:
    """A router that needs neither model, so a Solver loads nothing."""

    name = "none"
    needs_draft = False
    needs_target = False


def test_the_model_and_its_presets():
    assert DEFAULT_LIMITS == Limits()
    assert (DEFAULT_LIMITS.max_steps, DEFAULT_LIMITS.max_tokens, DEFAULT_LIMITS.step_tokens) == (24, 1024, 256)
    assert (SWEEP_LIMITS.max_steps, SWEEP_LIMITS.max_tokens, SWEEP_LIMITS.step_tokens) == (16, 768, 128)
    from reasoning import Limits as exported
    from reasoning.controller import Limits as loop

    assert exported is Limits and loop is Limits
    with pytest.raises(ConfigError, match="^bad value for max_steps: "):
        make_limits(max_steps=-1)


def test_api_defaults_come_from_the_model():
    from reasoning.api import Solver, solve, solve_many

    for fn in (Solver.__init__, solve, solve_many):
        params = inspect.signature(fn).parameters
        assert (params["draft"].default, params["target"].default, params["router"].default) == \
            (DEFAULT_DRAFT, DEFAULT_TARGET, DEFAULT_ROUTER)
        assert params["threshold"].default is None
    solver = Solver(router=NoModels())
    assert solver.draft is None and solver.target is None
    assert solver.limits == DEFAULT_LIMITS.model_copy(update={"few_shot": 2})  # the general pair's default
    from reasoning.segmenter import Segmenter

    seg = Segmenter()
    assert (seg.delimiter, seg.step_tokens) == (DEFAULT_LIMITS.delimiter, DEFAULT_LIMITS.step_tokens)


def parse_cli(argv: list[str]) -> SimpleNamespace:
    """What the CLI parses from argv for its command, without running it."""
    import typer

    group = typer.main.get_command(cli.app)
    ctx = group.make_context("specstep", list(argv))
    command = group.get_command(ctx, argv[0])
    return SimpleNamespace(**command.make_context(argv[0], list(argv[1:]), parent=ctx).params)


@pytest.mark.parametrize("argv,preset", [
    (["solve", "2+2?"], DEFAULT_LIMITS),
    (["serve"], DEFAULT_LIMITS),
    (["eval", "--dataset", "synthetic", "--policies", "draft-only", "--out", "o"], SWEEP_LIMITS),
    (["collect", "--dataset", "synthetic", "--out", "o"], SWEEP_LIMITS),
])
def test_cli_parser_defaults_come_from_the_model(argv, preset):
    args = parse_cli(argv)
    assert {k: getattr(args, k) for k in BUDGETS} == {k: getattr(preset, k) for k in BUDGETS}
    assert (args.draft, args.target) == (DEFAULT_DRAFT, DEFAULT_TARGET)
    if argv[0] == "solve":
        assert (args.temperature, args.seed, args.think) == (preset.temperature, preset.seed, preset.think)
    if argv[0] in ("solve", "serve"):
        assert args.router == DEFAULT_ROUTER and args.threshold is None


@pytest.mark.parametrize("command", ["solve", "serve"])
def test_cli_solve_and_serve_build_the_default_limits(monkeypatch, command):
    import reasoning.api

    seen = {}

    def fake_solver(draft, target, router, threshold, router_options=None, **limits):
        seen.update(draft=draft, target=target, router=router, threshold=threshold, limits=make_limits(**limits))
        raise SpecstepError("stop here")

    monkeypatch.setattr(reasoning.api, "Solver", fake_solver)
    argv = ["-v", command] + (["2+2?"] if command == "solve" else [])
    assert cli.main(argv) == 2
    assert (seen["draft"], seen["target"], seen["router"], seen["threshold"]) == \
        (DEFAULT_DRAFT, DEFAULT_TARGET, DEFAULT_ROUTER, None)
    assert seen["limits"] == DEFAULT_LIMITS


def test_eval_and_collect_take_the_sweep_preset(monkeypatch, tmp_path):
    import eval.sweep
    import training.collect
    from training.collect import CollectConfig

    cfg = CollectConfig(dataset="synthetic")
    assert {k: getattr(cfg, k) for k in BUDGETS} == {k: getattr(SWEEP_LIMITS, k) for k in BUDGETS}
    assert (cfg.draft, cfg.target) == (DEFAULT_DRAFT, DEFAULT_TARGET)
    sweep = eval.sweep.SweepConfig(dataset="synthetic", policies=["draft-only"])
    assert (sweep.draft, sweep.target, sweep.limits) == (DEFAULT_DRAFT, DEFAULT_TARGET, {})

    seen = {}

    def stop(cfg, *a, **k):
        seen["cfg"] = cfg
        raise SpecstepError("stop here")

    monkeypatch.setattr(eval.sweep, "run_sweep", stop)
    assert cli.main(["-v", "eval", "--dataset", "synthetic", "--policies", "draft-only", "--out", str(tmp_path)]) == 2
    assert seen["cfg"].limits == {k: getattr(SWEEP_LIMITS, k) for k in BUDGETS}
    monkeypatch.setattr(training.collect, "collect", stop)
    assert cli.main(["-v", "collect", "--dataset", "synthetic", "--out", str(tmp_path)]) == 2
    assert {k: getattr(seen["cfg"], k) for k in BUDGETS} == {k: getattr(SWEEP_LIMITS, k) for k in BUDGETS}


def test_server_caps_a_request_at_its_solvers_budget():
    from reasoning.api import Solver
    from specstep.serve import ChatRequest, request_limits

    solver = Solver(router=NoModels())
    msgs = [{"role": "user", "content": "2+2?"}]
    assert request_limits(solver, ChatRequest(messages=msgs)) == {}  # the Solver's limits apply
    big = ChatRequest(messages=msgs, max_tokens=10 ** 6)
    assert request_limits(solver, big) == {"max_tokens": DEFAULT_LIMITS.max_tokens}


# --------------------------------------------------------------------------- router options


def test_router_options_from_the_command_line_become_the_constructors_types():
    from routers import make_router

    r = make_router("best-of-n", 0.5, n="2", temperature="1", seed=" 3 ", load_slope="0.1", load_free="2")
    assert (r.n, r.temperature, r.seed, r.load_slope, r.load_free) == (2, 1.0, 3, 0.1, 2)
    assert type(r.temperature) is float and type(r.n) is int
    assert make_router("specreason", 0.5, audit="yes").reviews is True
    assert make_router("specreason", 0.5, audit="off").reviews is False
    assert make_router("handoff", 0.5, signal="surprise", way="one").signal == "surprise"
    c = make_router("cascade", 0.5, doubtful="-inf", low="0", high=1)
    assert (c.doubtful, c.low, c.high) == (float("-inf"), 0.0, 1.0)


@pytest.mark.parametrize("name, options, message", [
    ("lookahead", {"k": "2.5"}, "router 'lookahead' option k must be an integer, got '2.5'"),
    ("random", {"seed": "abc"}, "router 'random' option seed must be an integer, got 'abc'"),
    ("cascade", {"confident": "nan"}, "router 'cascade' option confident must be a number, got 'nan'"),
    ("specreason", {"audit": "maybe"}, "router 'specreason' option audit must be true or false, got 'maybe'"),
    ("specreason", {"judge_options": "k=2"}, "router 'specreason' option judge_options must be a mapping, got 'k=2'"),
    ("best-of-n", {"n": True}, "router 'best-of-n' option n must be an integer, got True"),
    ("arbitrage", {"model": 5}, "router 'arbitrage' option model must be a string or a path, got 5"),
    ("specreason", {"load_free": "x"}, "router 'specreason' option load_free must be an integer, got 'x'"),
])
def test_a_bad_router_option_is_one_line_naming_the_router_and_option(name, options, message):
    from routers import make_router

    with pytest.raises(ConfigError) as e:
        make_router(name, 0.5, **options)
    assert str(e.value) == message


def test_eval_refuses_a_non_numeric_verdict_option_before_any_model_loads(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["eval", "--dataset", "synthetic", "--limit", "1", "--policies", "verdict",
                   "--router-opt", "verdict_m=abc", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("specstep: error: ") and "verdict_m must be an integer, got 'abc'" in err
    assert not out.exists()  # refused while planning, before the dataset or a model was loaded
