"""The `specstep` command. User errors print one line on stderr and exit with code 2."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Annotated, Literal

import typer

from reasoning.errors import SpecstepError
from reasoning.options import DEFAULT_DRAFT, DEFAULT_ROUTER, DEFAULT_TARGET
from reasoning.options import DEFAULT_LIMITS as L
from reasoning.options import SWEEP_LIMITS as SL

try:  # typer >= 0.29 carries its own copy of click
    from typer._click.core import ParameterSource
    from typer._click.exceptions import ClickException
except ImportError:
    from click.core import ParameterSource
    from click.exceptions import ClickException

EXAMPLE = ("Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. "
           "How many balloons does she have left?")


# With the testbed pair, --example is this held-out problem of the synthetic test split (3 steps): the
# first one (of seed 0) that the shipped draft alone gets wrong
TESTBED_EXAMPLE = 3
# The recipe of the pair in reasoning/data/testbed/ (the default folder of `specstep testbed train`)
SHIPPED_RECIPE = "v4-written"


def example_question(draft: str, target: str) -> str:
    """The built-in example: a held-out testbed problem for the testbed pair, else a word problem."""
    from reasoning.specs import pair_of

    try:
        testbed = pair_of(draft, target) is not None
    except SpecstepError:
        testbed = False
    if not testbed:
        return EXAMPLE
    from eval.synthetic import generate

    return generate(TESTBED_EXAMPLE + 1, steps=3, seed=0, split="test")[TESTBED_EXAMPLE].question


def _quiet_hub_progress() -> None:
    """No download/conversion progress bars from transformers (when it is installed: a core install
    without the transformers extra has none to hide)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"threshold must be a number, got {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise typer.BadParameter(f"threshold must be a finite number, got {text!r}")
    return value


def _version() -> str:
    import reasoning

    return reasoning.__version__


# Options shared by several commands; defaults come from reasoning.options.
FEW_SHOT_HELP = "worked examples in the prompt (0-3; default 2, 0 for the testbed models)"
Draft = Annotated[str, typer.Option(help=f"draft model spec (default {DEFAULT_DRAFT})")]
Target = Annotated[str, typer.Option(help=f"target model spec (default {DEFAULT_TARGET})")]
Router = Annotated[str, typer.Option(help=f"routing policy (default {DEFAULT_ROUTER})")]
Threshold = Annotated[float | None, typer.Option(parser=_threshold, help="the router's threshold tau")]
EscalationRate = Annotated[str | None, typer.Option(metavar="R", help="escalate about R (0-1) of the steps: tau "
                                                    "from the router file's calibration (arbitrage)")]
RouterOpt = Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="router option, repeatable (e.g. "
                                                     "model=DIR for arbitrage, audit=true, load_slope=0.1)")]
Judge = Annotated[str | None, typer.Option(help="judge for judged routers: specreason, prm, rollout")]
JudgeOpt = Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="judge option, repeatable (e.g. "
                                                    "model=DIR style=value for prm)")]
FewShot = Annotated[int | None, typer.Option(help=FEW_SHOT_HELP)]
Think = Annotated[bool, typer.Option("--think", help="open the answer with <think> (reasoning models)")]
Json = Annotated[bool, typer.Option("--json", help="print the record as JSON")]
Dataset = Annotated[str, typer.Option(help="gsm8k, gsm8k-train, math500, aime24, aime25, amc23, svamp, asdiv, "
                                      "mawps, synthetic")]
DataDir = Annotated[str | None, typer.Option(help="folder with the unified JSONL files (or $SPECSTEP_DATA_DIR)")]
Limit = Annotated[int | None, typer.Option(help="first N problems")]
Seed = Annotated[int, typer.Option(help="seed of the synthetic set (and of sampling)")]
Steps = Annotated[int, typer.Option(help="steps per synthetic problem (difficulty, 1-8)")]
LatencyProfileOpt = Annotated[str | None, typer.Option(metavar="FILE", help="latency profile for modeled seconds: "
                                                     "a file or a shipped name (default: fitted on the records)")]
Bootstrap = Annotated[int, typer.Option(metavar="B", help="bootstrap resamples for the intervals (at least 100)")]
PresetOpt = Annotated[str | None, typer.Option("--preset", metavar="NAME", help="solve options for a family of "
                                               "models: r1-distill, qwq, qwen3-thinking, instruct (a --config file "
                                               "and the options given here go over it)")]
ConfigOpt = Annotated[str | None, typer.Option("--config", metavar="FILE", help="a TOML file of solve options "
                                               "(Limits fields; preset = NAME starts from a preset); the options "
                                               "given here go over it")]
SystemPrompt = Annotated[bool, typer.Option("--system-prompt/--no-system-prompt", help="the instruction as a system "
                                            "message, or after the question in the user's turn (R1's advice)")]
Repeat = Annotated[Literal["any", "consecutive"], typer.Option(help="a step equal to any earlier step ends the "
                                                               "solve, or one equal to the step before it only")]
Split = Annotated[Literal["train", "val", "test"], typer.Option(help="split of the synthetic set (default test; "
                                                                "collect router traces on train)")]

app = typer.Typer(name="specstep", help="Step-level speculative reasoning.", add_completion=False,
                  no_args_is_help=False, pretty_exceptions_enable=False, rich_markup_mode=None)
testbed_app = typer.Typer(help="the testbed pair (testbed-draft, testbed-target)", no_args_is_help=False)
app.add_typer(testbed_app, name="testbed")
_GLOBAL = {"verbose": False}


def _show_version(value: bool) -> None:
    if value:
        print(f"specstep {_version()}")
        raise typer.Exit()


@app.callback()
def _main_options(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="log progress of the library")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="show the version and exit")] = False,
) -> None:
    _GLOBAL["verbose"] = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# the solve options (Limits fields) a command may take as flags
LIMIT_FLAGS = ("max_steps", "max_tokens", "step_tokens", "few_shot", "temperature", "top_p", "top_k", "min_p", "seed",
               "think", "system_prompt", "repeat")


def _solve_options(args: SimpleNamespace, skip: tuple[str, ...] = ()) -> dict:
    """A command's solve options: its defaults, then --preset, then --config, then the flags given;
    checked (a bad value: one line, before any model loads). `skip`: flags of the command that mean
    something else (eval's and collect's --seed is the data set's)."""
    from reasoning.presets import layered

    names = [n for n in LIMIT_FLAGS if hasattr(args, n) and n not in skip]
    source = args.ctx.get_parameter_source
    given = {n: getattr(args, n) for n in names
             if source(n) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    return layered({n: getattr(args, n) for n in names}, args.preset, args.config, given)


def _args(values: dict) -> SimpleNamespace:
    """A command's parameters (lists default to empty) and the global --verbose."""
    return SimpleNamespace(**{k: ([] if v is None and k.endswith(("_opt", "image")) else v)
                              for k, v in values.items()}, verbose=_GLOBAL["verbose"])


@app.command(help="solve one question step by step")
def solve(
    question: Annotated[str | None, typer.Argument(help="the question (use --example for a built-in one)")] = None,
    example: Annotated[bool, typer.Option("--example", help="solve a built-in example (with the testbed pair, a "
                                          f"held-out testbed problem; else: {EXAMPLE})")] = False,
    draft: Draft = DEFAULT_DRAFT, target: Target = DEFAULT_TARGET, router: Router = DEFAULT_ROUTER,
    threshold: Threshold = None, escalation_rate: EscalationRate = None, router_opt: RouterOpt = None,
    judge: Judge = None, judge_opt: JudgeOpt = None,
    max_steps: Annotated[int, typer.Option()] = L.max_steps,
    max_tokens: Annotated[int, typer.Option(help="token budget of the solution")] = L.max_tokens,
    step_tokens: Annotated[int, typer.Option(help="token cap of one step")] = L.step_tokens,
    few_shot: FewShot = L.few_shot,
    temperature: Annotated[float, typer.Option()] = L.temperature,
    top_p: Annotated[float, typer.Option(help="sampling: keep the likeliest tokens up to this probability (1: off)")]
    = L.top_p,
    top_k: Annotated[int, typer.Option(help="sampling: keep the k likeliest tokens (0: off)")] = L.top_k,
    min_p: Annotated[float, typer.Option(help="sampling: keep tokens at least this share of the likeliest's "
                                         "probability (0: off)")] = L.min_p,
    seed: Annotated[int | None, typer.Option()] = L.seed,
    think: Think = False, system_prompt: SystemPrompt = L.system_prompt, repeat: Repeat = L.repeat,
    preset: PresetOpt = None, config: ConfigOpt = None, json: Json = False, *, ctx: typer.Context,
) -> int:
    return _cmd_solve(_args(locals()))


@app.command("eval", help="run policies over a benchmark; write records, summary, curve and report")
def eval_(
    dataset: Dataset,
    policies: Annotated[str, typer.Option(help="comma-separated routers, e.g. draft-only,target-only,random, and "
                                          "verdict (Speculative Verdict, text-only: samples of the draft, the "
                                          "target decides)")],
    out: Annotated[str, typer.Option(help="output folder (resumes when it holds the same run)")],
    data_dir: DataDir = None, limit: Limit = None,
    thresholds: Annotated[str, typer.Option(help="comma-separated thresholds for routers that take one")] = "",
    escalation_rates: Annotated[str, typer.Option(help="comma-separated target escalation rates (random, "
                                                  "arbitrage)")] = "",
    router_opt: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="option for every policy "
                                                         "that takes it (repeatable)")] = None,
    judge: Judge = None, judge_opt: JudgeOpt = None,
    draft: Draft = DEFAULT_DRAFT, target: Target = DEFAULT_TARGET, seed: Seed = 0, steps: Steps = 2,
    split: Split = "test",
    max_steps: Annotated[int, typer.Option()] = SL.max_steps,
    max_tokens: Annotated[int, typer.Option()] = SL.max_tokens,
    step_tokens: Annotated[int, typer.Option()] = SL.step_tokens,
    few_shot: FewShot = SL.few_shot,
    temperature: Annotated[float, typer.Option(help="sampling temperature of every solve (0: greedy)")] = 0.0,
    top_p: Annotated[float, typer.Option(help="sampling: likeliest tokens up to this probability (1: off)")] = 1.0,
    top_k: Annotated[int, typer.Option(help="sampling: the k likeliest tokens (0: off)")] = 0,
    min_p: Annotated[float, typer.Option(help="sampling: tokens at least this share of the likeliest's (0: off)")]
    = 0.0,
    think: Think = False, system_prompt: SystemPrompt = True, repeat: Repeat = "any",
    preset: PresetOpt = None, config: ConfigOpt = None,
    repeats: Annotated[int, typer.Option(metavar="R", help="runs per test problem and configuration (repeat k > "
                                         "0 samples with seed + k; greedy repeats measure time noise)")] = 1,
    select_limit: Annotated[int | None, typer.Option(metavar="N", help="choose each policy's threshold on N "
                                                     "validation problems (needs target-only), run only the chosen "
                                                     "ones on the test problems")] = None,
    select_margin: Annotated[float, typer.Option(help="accuracy (0-1) below target-only's that a chosen "
                                                 "threshold may give up (default 0)")] = 0.0,
    latency_profile: LatencyProfileOpt = None, bootstrap: Bootstrap = 2000,
    concurrency: Annotated[int, typer.Option(metavar="N", help="solve N problems side by side (transformers and vLLM "
                                       "decode them in one batch); needs --latency-profile")] = 1,
    *, ctx: typer.Context,
) -> int:
    return _cmd_eval(_args(locals()))


@app.command("report", help="write summary, curve and report again from a finished eval folder")
def report(
    folder: Annotated[str, typer.Argument(help="an eval --out folder")],
    latency_profile: LatencyProfileOpt = None, bootstrap: Bootstrap = 2000,
) -> int:
    return _cmd_report(_args(locals()))


@app.command("train-router", help="train the arbitrage router on collected traces")
def train_router(
    traces: Annotated[str, typer.Option(metavar="DIR", help="folder with traces.jsonl (from `specstep collect`)")],
    out: Annotated[str, typer.Option(metavar="ROUTER_DIR", help="router directory to write")],
    model: Annotated[Literal["lightgbm", "logistic"], typer.Option(help="default lightgbm")] = "lightgbm",
    seed: Annotated[int, typer.Option(help="seed of the problem split and the balancing")] = 0,
    test_fraction: Annotated[float, typer.Option(help="share of problems held out (0.25)")] = 0.25,
    no_balance: Annotated[bool, typer.Option("--no-balance", help="keep the training split's class "
                                             "balance")] = False,
) -> int:
    return _cmd_train_router(_args(locals()))


@app.command(help="collect router training traces (oracle behaviour policy, tau = 0)")
def collect(
    dataset: Dataset,
    out: Annotated[str, typer.Option(metavar="DIR", help="output folder (resumes when it holds the same "
                                     "collection)")],
    data_dir: DataDir = None, limit: Limit = None,
    judge: Annotated[str, typer.Option(help="judge of both steps: specreason (default), prm, "
                                       "rollout")] = "specreason",
    judge_opt: JudgeOpt = None,
    target_samples: Annotated[int, typer.Option(metavar="K", help="target steps written from each prefix (K > 1 "
                                                "needs --temperature > 0)")] = 1,
    temperature: Annotated[float, typer.Option(help="temperature of the target samples (0: the greedy "
                                               "step)")] = 0.0,
    draft: Draft = DEFAULT_DRAFT, target: Target = DEFAULT_TARGET, seed: Seed = 0, steps: Steps = 2,
    split: Split = "test",
    max_steps: Annotated[int, typer.Option()] = SL.max_steps,
    max_tokens: Annotated[int, typer.Option()] = SL.max_tokens,
    step_tokens: Annotated[int, typer.Option()] = SL.step_tokens,
    few_shot: FewShot = SL.few_shot,
    think: Think = False, system_prompt: SystemPrompt = True, repeat: Repeat = "any",
    preset: Annotated[str | None, typer.Option("--preset", metavar="NAME", help="the solves' options for a family "
                                               "of models (r1-distill, qwq, qwen3-thinking, instruct); its "
                                               "temperature is the solves', --temperature the target samples'")]
    = None,
    config: ConfigOpt = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="solve N problems side by side (transformers and "
                                             "vLLM decode them in one batch)")] = 1,
    *, ctx: typer.Context,
) -> int:
    return _cmd_collect(_args(locals()))


@app.command(help="list the bundled model aliases and spec forms")
def models() -> int:
    return _cmd_models()


@testbed_app.command("train", help="train both testbed adapters from scratch (seeded; about 3 hours on 2 CPU "
                     "cores: the target about 113 minutes, the draft about 66)")
def testbed_train(
    out: Annotated[str | None, typer.Option(metavar="DIR", help="where to write target/ and draft/ (default: the "
                                            "package's reasoning/data/testbed)")] = None,
    only: Annotated[Literal["target", "draft"] | None, typer.Option(help="train one of the two")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    target_steps: Annotated[int | None, typer.Option(help="optimizer steps of the target's first phase (the "
                                                     "recipe's continuation phases follow)")] = None,
    draft_steps: Annotated[int | None, typer.Option(help="optimizer steps of the draft's first phase (the "
                                                    "recipe's continuation phases follow)")] = None,
    batch: Annotated[int | None, typer.Option(help="examples per optimizer step")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="start each model from its adapter in --out and train "
                                         "only the phases it does not hold yet (its training.json counts "
                                         "them; each phase is saved when it ends)")] = False,
    recipe: Annotated[Literal["v1", "v2", "v2-written", "v3-written", "v3-focus", "v4-written"], typer.Option(
        help="v4-written: the shipped pair (v3-written's target two phases longer again: 300 steps at 2e-4, 300 "
        "at 1.5e-4); v3-written: v2-written's target two phases longer (300 at 3e-4, 300 at 2e-4); v3-focus: "
        "v2-written's target one phase longer (300 at 3e-4), 40% of its examples one step that carries, "
        "borrows or divides long; v2-written: v2 with carries, borrows and long divisions written out; v2: "
        "the rank-64 target in five phases, the draft in three; v1: the first pair (rank 16/64, two phases "
        "each)")] = SHIPPED_RECIPE,
    keep_phases: Annotated[bool, typer.Option("--keep-phases", help="also keep each phase's adapter in "
                                              "DIR/phases/ (to choose one on validation problems)")] = False,
) -> int:
    return _cmd_testbed(_args(locals()))


@app.command(help="Speculative Verdict: small experts answer, consensus picks, a large model decides")
def verdict(
    question: Annotated[str, typer.Argument()],
    image: Annotated[list[str] | None, typer.Option(metavar="FILE", help="image file (repeatable)")] = None,
    experts: Annotated[str, typer.Option(help=f"comma-separated expert model specs (default {DEFAULT_DRAFT}; one "
                                         "spec with --samples K draws K experts from it)")] = DEFAULT_DRAFT,
    samples: Annotated[int | None, typer.Option(metavar="K", help="experts sampled from one model")] = None,
    verdict_model: Annotated[str, typer.Option(help=f"the large model (default {DEFAULT_TARGET})")] = DEFAULT_TARGET,
    m: Annotated[int, typer.Option("-m", help="experts whose paths go to the verdict (default 3)")] = 3,
    temperature: Annotated[float | None, typer.Option(help="experts' temperature (default 0, or 0.7 with "
                                                      "--samples)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    max_tokens: Annotated[int, typer.Option(help="token cap of an expert's answer")] = 384,
    path_tokens: Annotated[int, typer.Option(help="token cap of a path in the verdict prompt")] = 256,
    skip_on_agreement: Annotated[bool, typer.Option("--skip-on-agreement", help="take the selected experts' shared "
                                                    "answer without calling the verdict model (default: always "
                                                    "call it, as the paper does)")] = False,
    few_shot: Annotated[int, typer.Option(help="worked examples for text-only questions (0-3)")] = 2,
    json: Json = False,
) -> int:
    return _cmd_verdict(_args(locals()))


@app.command(help="serve the draft+target pair as an OpenAI-compatible HTTP API")
def serve(
    draft: Draft = DEFAULT_DRAFT, target: Target = DEFAULT_TARGET, router: Router = DEFAULT_ROUTER,
    threshold: Threshold = None, escalation_rate: EscalationRate = None, router_opt: RouterOpt = None,
    judge: Judge = None, judge_opt: JudgeOpt = None,
    max_steps: Annotated[int, typer.Option()] = L.max_steps,
    max_tokens: Annotated[int, typer.Option(help="token budget of a solution (requests may lower it)")] = L.max_tokens,
    step_tokens: Annotated[int, typer.Option(help="token cap of one step")] = L.step_tokens,
    few_shot: FewShot = L.few_shot, think: Think = False,
    system_prompt: SystemPrompt = L.system_prompt, repeat: Repeat = L.repeat,
    preset: PresetOpt = None, config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on (default 127.0.0.1)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (default 8000; 0 picks a free one)")] = 8000,
    model_name: Annotated[str, typer.Option(help="the model id clients use (default specstep)")] = "specstep",
    api_key_env: Annotated[str | None, typer.Option(metavar="VAR", help="require Authorization: Bearer with the "
                                                    "token in environment variable VAR")] = None,
    api_key: Annotated[str | None, typer.Option(metavar="TOKEN", help="require this bearer token (visible in the "
                                                "process list; prefer --api-key-env)")] = None,
    max_concurrency: Annotated[int | None, typer.Option(metavar="N", help="solve at most N requests at once; more "
                                                        "get 429 (default: no limit)")] = None,
    *, ctx: typer.Context,
) -> int:
    if api_key_env is not None and api_key is not None:
        raise SpecstepError("argument --api-key: not allowed with argument --api-key-env")
    return _cmd_serve(_args(locals()))


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecstepError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def router_options(args: SimpleNamespace) -> dict:
    opts: dict = _pairs(args.router_opt, "--router-opt")
    if args.judge is not None:
        opts["judge"] = args.judge
    if args.judge_opt:
        opts["judge_options"] = _pairs(args.judge_opt, "--judge-opt")
    return opts


def _cmd_models() -> int:
    from reasoning.specs import ALIASES

    for a in ALIASES.values():
        print(f"{a.name:14s} {a.description}")
    print("\nOther forms: ./local_dir, file.gguf, hf:ID_OR_PATH, org/name (Hub, online only), "
          "llamacpp:ALIAS_OR_GGUF, vllm:ALIAS_OR_DIR, openai:MODEL?base_url=URL")
    return 0


def _solve_router_options(args: SimpleNamespace) -> dict:
    opts = router_options(args)
    if args.escalation_rate is not None:
        opts["escalation_rate"] = args.escalation_rate
    return opts


def _cmd_solve(args: SimpleNamespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from reasoning.api import Solver
    from reasoning.types import STAGES, Step

    question = example_question(args.draft, args.target) if args.example and not args.question else args.question
    if question is None or not question.strip():
        raise SpecstepError("the question is empty: give a question, or --example")
    from reasoning.prompts import check_question

    check_question(question)  # before anything prints it or loads a model
    options = _solve_options(args)
    out = Console(highlight=False)
    err = Console(stderr=True)
    if not args.verbose:
        _quiet_hub_progress()
    with err.status("loading models (the first run converts the bundled GGUF files, ~1 minute)"):
        solver = Solver(args.draft, args.target, args.router, args.threshold,
                        router_options=_solve_router_options(args), **options)

    def show(step: Step) -> None:
        color = "cyan" if step.author == "draft" else "magenta"
        note = ""
        if step.decision == "escalate":
            note = f" (draft rejected{'' if step.score is None else f', score {step.score:.2f}'})"
        elif step.score is not None:
            note = f" (score {step.score:.2f})"
        cost = step.costs.seconds
        out.print(f"[{color}]\\[{step.author:6s}][/{color}] [dim]#{step.index} {step.tokens} tok "
                  f"{cost:.2f}s{note}[/dim]")
        out.print("  " + step.text.replace("\n", "\n  "), markup=False)

    if not args.json:
        out.print(f"[bold]Question:[/bold] {question}", markup=True)
    sol = solver.solve(question, on_step=None if args.json else show)
    if args.json:
        print(sol.model_dump_json(indent=2))
        return 0
    out.print(f"\n[bold]Answer:[/bold] {sol.answer if sol.answer is not None else '(none)'}"
              f"  [dim](stop: {sol.stop_reason}{', forced' if sol.forced_answer else ''})[/dim]")
    t = Table(title="cost per stage")
    t.add_column("stage", no_wrap=True)
    for col in ("calls", "input tok", "output tok", "seconds", "GFLOPs"):
        t.add_column(col, justify="right")
    for name in (*STAGES, "discarded"):
        c = sol.costs.stage(name) if name != "discarded" else sol.costs.discarded
        t.add_row(name if name != "discarded" else "(draft thrown away)", str(c.calls),
                  str(c.input_tokens), str(c.output_tokens), f"{c.seconds:.2f}", f"{c.flops / 1e9:.1f}")
    t.add_row("total wall", "", "", "", f"{sol.wall_seconds:.2f}", f"{sol.costs.flops / 1e9:.1f}")
    out.print(t)
    acc = sol.acceptance()
    by_author = {a: sum(1 for s in sol.steps if s.author == a) for a in ("draft", "target")}
    out.print(f"steps by draft: {by_author['draft']}, by target: {by_author['target']}; "
              f"draft acceptance: {acc['steps']:.0%} of steps, {acc['tokens']:.0%} of tokens")
    if any(spec.pair is not None for spec in (solver.draft_spec, solver.target_spec)):
        out.print("[dim]The testbed pair: tiny models fine-tuned on a synthetic arithmetic task. They show the method "
                  "working; their numbers are not the method's quality on real models.[/dim]")
    else:
        out.print("[dim]The bundled models are tiny (135M/270M) and weak at math: answers are often wrong. "
                  "For a pair that shows the method, use --draft testbed-draft --target testbed-target.[/dim]")
    return 0


def _cmd_verdict(args: SimpleNamespace) -> int:
    from reasoning.prompts import check_question
    from reasoning.verdict import Verdict

    check_question(args.question)  # before any model loads
    images = []
    if args.image:
        from reasoning.images import load_images

        images = args.image
        load_images(images)  # bad images fail before any model loads
    experts = [e.strip() for e in args.experts.split(",") if e.strip()]
    if args.samples is None and len(experts) == 1:
        args.samples = 5
    if not args.verbose:
        _quiet_hub_progress()
    v = Verdict(experts, args.verdict_model, m=args.m, samples=args.samples, temperature=args.temperature,
                seed=args.seed, max_tokens=args.max_tokens, path_tokens=args.path_tokens, few_shot=args.few_shot,
                skip_on_agreement=args.skip_on_agreement)
    r = v.run(args.question, images)
    if args.json:
        print(r.model_dump_json(indent=2))
        return 0
    for c in r.candidates:
        score = r.consensus[c.expert]
        mark = "*" if c.expert in r.selected else " "
        print(f"{mark} expert {c.expert} ({c.spec}): answer {c.answer!r}, consensus "
              f"{'-' if score is None else f'{score:.3f}'}, {c.tokens} tokens")
    how = "the selected experts agree, no verdict needed" if r.verdict_skipped else f"from the {r.answer_source}"
    print(f"Answer: {r.answer if r.answer is not None else '(none)'} ({how})")
    for name, c in r.costs.model_dump().items():
        print(f"  {name:10s} calls {c['calls']:3d}  input {c['input_tokens']:6d}  output {c['output_tokens']:5d}  "
              f"{c['seconds']:.2f}s")
    print(f"  wall       {r.wall_seconds:.2f}s")
    return 0


def _cmd_serve(args: SimpleNamespace) -> int:
    from reasoning.api import Solver
    from reasoning.backends import missing_module

    if not 0 <= args.port <= 65535:
        raise SpecstepError(f"--port must be 0-65535, got {args.port}")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise SpecstepError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    if not args.model_name.strip():
        raise SpecstepError("--model-name is empty")
    api_key = args.api_key
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SpecstepError(f"--api-key-env: environment variable {args.api_key_env} is not set or empty")
    if api_key is not None and not api_key.strip():
        raise SpecstepError("the API key is empty")
    lacking = missing_module(("fastapi", "uvicorn"))
    if lacking is not None:
        raise SpecstepError(f'specstep serve needs {lacking}, which is not installed: pip install "specstep[serve]"')
    from specstep.serve import make_server

    if not args.verbose:
        _quiet_hub_progress()
    solver = Solver(args.draft, args.target, args.router, args.threshold,
                    router_options=_solve_router_options(args), **_solve_options(args))
    try:
        server = make_server(solver, args.host, args.port, api_key=api_key, model_name=args.model_name,
                             max_concurrency=args.max_concurrency)
    except OSError as e:
        raise SpecstepError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("specstep.serve").warning("listening on %s without an API key", args.host)
    print(f"specstep: serving model {args.model_name!r} at {server.url}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _floats(text: str, flag: str) -> list[float]:
    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        try:
            v = float(part)
        except ValueError:
            raise SpecstepError(f"{flag} takes comma-separated numbers, got {part!r}") from None
        if math.isnan(v) or math.isinf(v):
            raise SpecstepError(f"{flag} takes finite numbers, got {part!r}")
        out.append(v)
    return out


def _cmd_eval(args: SimpleNamespace) -> int:
    from rich.console import Console

    from eval.report import write_outputs
    from eval.sweep import SweepConfig, run_sweep

    if args.limit is not None and args.limit < 1:
        raise SpecstepError(f"--limit must be at least 1, got {args.limit}")
    if args.repeats < 1:
        raise SpecstepError(f"--repeats must be at least 1, got {args.repeats}")
    if args.select_limit is not None and args.select_limit < 1:
        raise SpecstepError(f"--select-limit must be at least 1, got {args.select_limit}")
    if not 0.0 <= args.select_margin <= 1.0:
        raise SpecstepError(f"--select-margin must be between 0 and 1, got {args.select_margin}")
    _check_bootstrap(args.bootstrap)
    if args.concurrency < 1:
        raise SpecstepError(f"--concurrency must be at least 1, got {args.concurrency}")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    options = _solve_options(args, skip=("seed",))
    # the other options only where they differ from the defaults, so that earlier runs' folders keep their
    # identity (and resume)
    always = ("max_steps", "max_tokens", "step_tokens", "few_shot")
    limits = {k: v for k, v in options.items() if k in always or v != getattr(L, k)}
    cfg = SweepConfig(
        dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, seed=args.seed,
        synthetic_steps=args.steps, synthetic_split=args.split, draft=args.draft, target=args.target,
        policies=policies,
        thresholds=_floats(args.thresholds, "--thresholds"),
        escalation_rates=_floats(args.escalation_rates, "--escalation-rates"),
        router_options=router_options(args),
        limits=limits, repeats=args.repeats, select_limit=args.select_limit, select_margin=args.select_margin,
        latency_profile=args.latency_profile, concurrency=args.concurrency,
    )
    records = run_sweep(cfg, args.out)
    profile = _profile(args.latency_profile, cfg.draft, cfg.target)
    points = write_outputs(records, args.out, cfg.draft, cfg.target, profile, n_boot=args.bootstrap,
                           select_margin=cfg.select_margin)
    out = Console(highlight=False)
    for p in points:
        out.print(f"{p.config:>24s}  acc {100 * p.accuracy:5.1f}%  mean {p.mean_latency:6.2f}s  "
                  f"escalated {100 * p.escalation_rate:5.1f}%{'  pareto' if p.pareto else ''}")
    out.print(f"wrote {args.out}/records.jsonl, summary.json, summary.csv, curve.png, report.md")
    return 0


def _check_bootstrap(n: int) -> None:
    if n < 100:
        raise SpecstepError(f"--bootstrap must be at least 100, got {n}")


def _profile(path: str | None, draft: str, target: str):
    if path is None:
        return None
    from eval.latency import read_profile

    profile = read_profile(path)
    profile.check_pair(draft, target, path)
    return profile


def _cmd_report(args: SimpleNamespace) -> int:
    import json
    from pathlib import Path

    from eval.records import read_records
    from eval.report import write_outputs
    from eval.sweep import RUN_FILE, SweepConfig

    folder = Path(args.folder)
    _check_bootstrap(args.bootstrap)
    try:
        cfg = SweepConfig.model_validate(json.loads((folder / RUN_FILE).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise SpecstepError(f"{folder} is not an eval folder (no readable {RUN_FILE})") from None
    profile = _profile(args.latency_profile or cfg.latency_profile, cfg.draft, cfg.target)
    records = read_records(folder / "records.jsonl")
    if not records:
        raise SpecstepError(f"{folder} has no records yet")
    write_outputs(records, folder, cfg.draft, cfg.target, profile, n_boot=args.bootstrap,
                  select_margin=cfg.select_margin)
    print(f"wrote {folder}/summary.json, summary.csv, curve.png, report.md")
    return 0


def _cmd_train_router(args: SimpleNamespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from training.train import train_router

    err = Console(stderr=True)
    with err.status("training the router"):
        rep = train_router(args.traces, args.out, model=args.model, seed=args.seed,
                           test_fraction=args.test_fraction, balance=not args.no_balance)
    out = Console(highlight=False)

    def fmt(key: str, pct: bool = False) -> str:
        v = rep.metrics.get(key)
        return "n/a" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")

    tc, bc, hc = rep.train_counts, rep.train_counts_balanced, rep.test_counts
    t = Table(title=f"{rep.model_type} router: train vs held-out problems")
    for col in ("metric", "train", "held-out"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    t.add_row("problems", str(len(rep.train_problems)), str(len(rep.test_problems)))
    t.add_row("steps (target better / not)", f"{bc.positive} / {bc.negative}", f"{hc.positive} / {hc.negative}")
    t.add_row("AUC", fmt("train_auc"), fmt("test_auc"))
    t.add_row("Spearman rho (score, advantage)", fmt("train_spearman"), fmt("test_spearman"))
    t.add_row("accuracy at tau=0.5", fmt("train_accuracy", True), fmt("test_accuracy", True))
    t.add_row("  target better (escalate)", fmt("train_accuracy_positive", True), fmt("test_accuracy_positive", True))
    t.add_row("  draft as good (keep)", fmt("train_accuracy_negative", True), fmt("test_accuracy_negative", True))
    t.add_row("base rate (target better)", fmt("train_base_rate", True), fmt("test_base_rate", True))
    out.print(t)
    balance = (f"balanced to {bc.positive} / {bc.negative}" if not args.no_balance else "not balanced")
    out.print(f"training steps before balancing: {tc.positive} target better / {tc.negative} not; {balance}"
              + (f"; {rep.n_incomplete_problems} problem(s) cut short left out" if rep.n_incomplete_problems else ""))
    tenths = [p for p in rep.tau_table if abs(10 * p.tau - round(10 * p.tau)) < 1e-9]
    out.print("held-out escalation rate by tau: "
              + "  ".join(f"{p.tau:.1f}:{100 * p.escalation_rate:.0f}%" for p in tenths))
    out.print(f"wrote the router to {rep.out_dir} (router.json, {os.path.basename(rep.model_file)}); "
              f"use it with --router arbitrage --router-opt model={rep.out_dir}")
    return 0


def _cmd_collect(args: SimpleNamespace) -> int:
    from rich.console import Console

    from training.collect import collect, make_config

    if args.limit is not None and args.limit < 1:
        raise SpecstepError(f"--limit must be at least 1, got {args.limit}")
    if args.concurrency < 1:
        raise SpecstepError(f"--concurrency must be at least 1, got {args.concurrency}")
    options = _solve_options(args, skip=("seed", "temperature"))  # here they are the data's and the samples'
    always = ("max_steps", "max_tokens", "step_tokens", "few_shot")
    cfg = make_config(
        dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, seed=args.seed, synthetic_steps=args.steps,
        synthetic_split=args.split, draft=args.draft, target=args.target, judge=args.judge,
        judge_options=_pairs(args.judge_opt, "--judge-opt"),
        target_samples=args.target_samples, temperature=args.temperature,
        limits={k: v for k, v in options.items() if k not in always and v != getattr(L, k)},
        **{k: options[k] for k in always},
    )
    if not args.verbose:
        _quiet_hub_progress()
    s = collect(cfg, args.out, concurrency=args.concurrency)
    out = Console(highlight=False)
    out.print(f"{s.n_records} step records of {s.n_problems} problems in {s.traces} ({s.n_new_records} new; "
              f"{s.n_skipped} problems were already done); label=True for {100 * s.label_share:.1f}% of steps")
    return 0


def _cmd_testbed(args: SimpleNamespace) -> int:
    from dataclasses import replace

    from training.testbed import RECIPES, train_testbed

    if args.recipe != SHIPPED_RECIPE and args.out is None:  # the package's folder holds the shipped pair
        raise SpecstepError(f"--recipe {args.recipe} needs --out DIR: the default folder holds the shipped "
                            f"({SHIPPED_RECIPE}) pair")
    cfg = replace(RECIPES[args.recipe], seed=args.seed, keep_phases=args.keep_phases)
    for key in ("target_steps", "draft_steps", "batch"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise SpecstepError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
            setattr(cfg, key, value)
    if args.out is not None:
        cfg.out = args.out
    report = train_testbed(cfg, only=args.only, resume=args.resume)
    for what, info in report.items():
        print(f"{what}: {info['steps']} steps in {info['seconds']:.0f}s, final loss {info['final_loss']:.3f}, "
              f"adapter sha256 {info['sha256'][:12]} in {cfg.out}/{what}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        return command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="specstep",
                            standalone_mode=False) or 0
    except ClickException as e:  # bad usage: one line, as for every other user error
        sys.stderr.write(f"specstep: error: {e.format_message()}\n")
        return 2
    except SpecstepError as e:
        sys.stderr.write(f"specstep: error: {e}\n")
        return 2
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("specstep: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
