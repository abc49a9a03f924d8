"""The `specstep` command. User errors print one line on stderr and exit with code 2."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence

from reasoning.errors import SpecstepError

EXAMPLE = ("Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. "
           "How many balloons does she have left?")


# With the testbed pair, --example is this held-out problem of the synthetic test split (3 steps).
TESTBED_EXAMPLE = 0


def example_question(draft: str, target: str) -> str:
    """The built-in example: a held-out testbed problem for the testbed pair, else a word problem."""
    from reasoning.specs import parse_spec

    try:
        testbed = any(parse_spec(s).alias is not None and parse_spec(s).alias.base is not None
                      for s in (draft, target))
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"specstep: error: {message}\n")
        raise SystemExit(2)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number, got {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"threshold must be a finite number, got {text!r}")
    return value


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="gsm8k, gsm8k-train, math500, aime24, aime25, amc23, svamp, "
                   "asdiv, mawps, synthetic")
    p.add_argument("--data-dir", default=None, help="folder with the unified JSONL files (or $SPECSTEP_DATA_DIR)")
    p.add_argument("--limit", type=int, default=None, help="first N problems")


def _run_args(p: argparse.ArgumentParser) -> None:
    """Models, the synthetic set's knobs and the solve limits shared by eval and collect."""
    from reasoning.options import DEFAULT_DRAFT, DEFAULT_TARGET
    from reasoning.options import SWEEP_LIMITS as L

    p.add_argument("--draft", default=DEFAULT_DRAFT)
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (and of sampling)")
    p.add_argument("--steps", type=int, default=2, help="steps per synthetic problem (difficulty, 1-8)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split of the synthetic set (default test; collect router traces on train)")
    p.add_argument("--max-steps", type=int, default=L.max_steps)
    p.add_argument("--max-tokens", type=int, default=L.max_tokens)
    p.add_argument("--step-tokens", type=int, default=L.step_tokens)
    p.add_argument("--few-shot", type=int, default=L.few_shot, help="worked examples in the prompt (0-3; default 2, "
                   "0 for the testbed models)")


def _policy_args(p: argparse.ArgumentParser) -> None:
    """Models, router and judge of solve and serve."""
    from reasoning.options import DEFAULT_DRAFT, DEFAULT_ROUTER, DEFAULT_TARGET

    p.add_argument("--draft", default=DEFAULT_DRAFT, help=f"draft model spec (default {DEFAULT_DRAFT})")
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"target model spec (default {DEFAULT_TARGET})")
    p.add_argument("--router", default=DEFAULT_ROUTER, help=f"routing policy (default {DEFAULT_ROUTER})")
    p.add_argument("--threshold", type=_threshold, default=None, help="the router's threshold tau")
    p.add_argument("--escalation-rate", default=None, metavar="R",
                   help="escalate about R (0-1) of the steps: tau from the router file's calibration (arbitrage)")
    p.add_argument("--router-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="router option, repeatable (e.g. model=DIR for arbitrage, audit=true, load_slope=0.1)")
    p.add_argument("--judge", default=None, help="judge for judged routers: specreason, prm, rollout")
    p.add_argument("--judge-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="judge option, repeatable (e.g. model=DIR style=value for prm)")


def _version() -> str:
    import reasoning

    return reasoning.__version__


def _parser() -> argparse.ArgumentParser:
    from reasoning.options import DEFAULT_DRAFT, DEFAULT_TARGET
    from reasoning.options import DEFAULT_LIMITS as L

    p = _Parser(prog="specstep", description="Step-level speculative reasoning.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    p.add_argument("--version", action="version", version=f"specstep {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("solve", help="solve one question step by step")
    s.add_argument("question", help="the question (use --example for a built-in one)", nargs="?")
    s.add_argument("--example", action="store_true", help=f"solve a built-in example (with the testbed pair, a "
                   f"held-out testbed problem; else: {EXAMPLE})")
    _policy_args(s)
    s.add_argument("--max-steps", type=int, default=L.max_steps)
    s.add_argument("--max-tokens", type=int, default=L.max_tokens, help="token budget of the solution")
    s.add_argument("--step-tokens", type=int, default=L.step_tokens, help="token cap of one step")
    s.add_argument("--few-shot", type=int, default=L.few_shot, help="worked examples in the prompt (0-3; default 2, "
                   "0 for the testbed models)")
    s.add_argument("--temperature", type=float, default=L.temperature)
    s.add_argument("--seed", type=int, default=L.seed)
    s.add_argument("--think", action="store_true", help="open the answer with <think> (reasoning models)")
    s.add_argument("--json", action="store_true", help="print the solution record as JSON")
    e = sub.add_parser("eval", help="run policies over a benchmark; write records, summary, curve and report")
    _data_args(e)
    e.add_argument("--policies", required=True, help="comma-separated routers, e.g. draft-only,target-only,random, "
                   "and verdict (Speculative Verdict, text-only: samples of the draft, the target decides)")
    e.add_argument("--thresholds", default="", help="comma-separated thresholds for routers that take one")
    e.add_argument("--escalation-rates", default="", help="comma-separated target escalation rates (random, "
                   "arbitrage)")
    e.add_argument("--out", required=True, help="output folder (resumes when it holds the same run)")
    e.add_argument("--router-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="option for every policy that takes it (repeatable)")
    e.add_argument("--judge", default=None)
    e.add_argument("--judge-opt", action="append", default=[], metavar="KEY=VALUE")
    _run_args(e)
    t = sub.add_parser("train-router", help="train the arbitrage router on collected traces")
    t.add_argument("--traces", required=True, metavar="DIR", help="folder with traces.jsonl (from `specstep collect`)")
    t.add_argument("--out", required=True, metavar="ROUTER_DIR", help="router directory to write")
    t.add_argument("--model", choices=("lightgbm", "logistic"), default="lightgbm", help="default lightgbm")
    t.add_argument("--seed", type=int, default=0, help="seed of the problem split and the balancing")
    t.add_argument("--test-fraction", type=float, default=0.25, help="share of problems held out (0.25)")
    t.add_argument("--no-balance", action="store_true", help="keep the training split's class balance")
    c = sub.add_parser("collect", help="collect router training traces (oracle behaviour policy, tau = 0)")
    _data_args(c)
    c.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes when it holds the same "
                   "collection)")
    c.add_argument("--judge", default="specreason", help="judge of both steps: specreason (default), prm, rollout")
    c.add_argument("--judge-opt", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--target-samples", type=int, default=1, metavar="K",
                   help="target steps written from each prefix (K > 1 needs --temperature > 0)")
    c.add_argument("--temperature", type=float, default=0.0,
                   help="temperature of the target samples (0: the greedy step)")
    _run_args(c)
    sub.add_parser("models", help="list the bundled model aliases and spec forms")
    tb = sub.add_parser("testbed", help="the testbed pair (testbed-draft, testbed-target)")
    tb_sub = tb.add_subparsers(dest="testbed_command", required=True, parser_class=_Parser)
    tt = tb_sub.add_parser("train", help="train both testbed adapters from scratch (seeded; about 100 minutes on 2 "
                           "CPU cores: the target about 70, the draft about 33)")
    tt.add_argument("--out", default=None, metavar="DIR", help="where to write target/ and draft/ "
                    "(default: the package's reasoning/data/testbed)")
    tt.add_argument("--only", choices=("target", "draft"), default=None, help="train one of the two")
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--target-steps", type=int, default=None, help="optimizer steps of the target's first phase (a "
                    "continuation phase of 180 steps follows)")
    tt.add_argument("--draft-steps", type=int, default=None, help="optimizer steps of the draft's first phase (a "
                    "continuation phase of 400 steps follows)")
    tt.add_argument("--batch", type=int, default=None, help="examples per optimizer step")
    tt.add_argument("--resume", action="store_true", help="start each model from its adapter in --out and train "
                    "only the phases it does not hold yet (its training.json counts them)")
    w = sub.add_parser("verdict", help="Speculative Verdict: small experts answer, consensus picks, a large "
                       "model decides")
    w.add_argument("question")
    w.add_argument("--image", action="append", default=[], metavar="FILE", help="image file (repeatable)")
    w.add_argument("--experts", default=DEFAULT_DRAFT, help="comma-separated expert model specs "
                   f"(default {DEFAULT_DRAFT}; one spec with --samples K draws K experts from it)")
    w.add_argument("--samples", type=int, default=None, metavar="K", help="experts sampled from one model")
    w.add_argument("--verdict-model", default=DEFAULT_TARGET, help=f"the large model (default {DEFAULT_TARGET})")
    w.add_argument("-m", type=int, default=3, help="experts whose paths go to the verdict (default 3)")
    w.add_argument("--temperature", type=float, default=None, help="experts' temperature (default 0, or 0.7 "
                   "with --samples)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--max-tokens", type=int, default=384, help="token cap of an expert's answer")
    w.add_argument("--path-tokens", type=int, default=256, help="token cap of a path in the verdict prompt")
    w.add_argument("--skip-on-agreement", action="store_true",
                   help="take the selected experts' shared answer without calling the verdict model (default: "
                        "always call it, as the paper does)")
    w.add_argument("--few-shot", type=int, default=2, help="worked examples for text-only questions (0-3)")
    w.add_argument("--json", action="store_true", help="print the whole record as JSON")
    v = sub.add_parser("serve", help="serve the draft+target pair as an OpenAI-compatible HTTP API")
    _policy_args(v)
    v.add_argument("--max-steps", type=int, default=L.max_steps)
    v.add_argument("--max-tokens", type=int, default=L.max_tokens,
                   help="token budget of a solution (requests may lower it)")
    v.add_argument("--step-tokens", type=int, default=L.step_tokens, help="token cap of one step")
    v.add_argument("--few-shot", type=int, default=L.few_shot, help="worked examples in the prompt (0-3; default 2, "
                   "0 for the testbed models)")
    v.add_argument("--think", action="store_true", help="open the answer with <think> (reasoning models)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    v.add_argument("--model-name", default="specstep", help="the model id clients use (default specstep)")
    key = v.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", default=None, metavar="VAR",
                     help="require Authorization: Bearer with the token in environment variable VAR")
    key.add_argument("--api-key", default=None, metavar="TOKEN",
                     help="require this bearer token (visible in the process list; prefer --api-key-env)")
    v.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                   help="solve at most N requests at once; more get 429 (default: no limit)")
    return p


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecstepError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def router_options(args: argparse.Namespace) -> dict:
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


def _solve_router_options(args: argparse.Namespace) -> dict:
    opts = router_options(args)
    if args.escalation_rate is not None:
        opts["escalation_rate"] = args.escalation_rate
    return opts


def _cmd_solve(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from reasoning.api import Solver
    from reasoning.types import STAGES, Step

    question = example_question(args.draft, args.target) if args.example and not args.question else args.question
    if question is None or not question.strip():
        raise SpecstepError("the question is empty: give a question, or --example")
    from reasoning.prompts import check_question

    check_question(question)  # before anything prints it or loads a model
    out = Console(highlight=False)
    err = Console(stderr=True)
    if not args.verbose:
        _quiet_hub_progress()
    with err.status("loading models (the first run converts the bundled GGUF files, ~1 minute)"):
        solver = Solver(args.draft, args.target, args.router, args.threshold,
                        router_options=_solve_router_options(args), max_steps=args.max_steps,
                        max_tokens=args.max_tokens, step_tokens=args.step_tokens, few_shot=args.few_shot,
                        temperature=args.temperature, seed=args.seed, think=args.think)

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
    if "testbed" in f"{args.draft} {args.target}":
        out.print("[dim]The testbed pair: tiny models fine-tuned on a synthetic arithmetic task. They show the method "
                  "working; their numbers are not the method's quality on real models.[/dim]")
    else:
        out.print("[dim]The bundled models are tiny (135M/270M) and weak at math: answers are often wrong. "
                  "For a pair that shows the method, use --draft testbed-draft --target testbed-target.[/dim]")
    return 0


def _cmd_verdict(args: argparse.Namespace) -> int:
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


def _cmd_serve(args: argparse.Namespace) -> int:
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
    from reasoning.serve import make_server

    if not args.verbose:
        _quiet_hub_progress()
    solver = Solver(args.draft, args.target, args.router, args.threshold,
                    router_options=_solve_router_options(args), max_steps=args.max_steps,
                    max_tokens=args.max_tokens, step_tokens=args.step_tokens, few_shot=args.few_shot,
                    think=args.think)
    try:
        server = make_server(solver, args.host, args.port, api_key=api_key, model_name=args.model_name,
                             max_concurrency=args.max_concurrency)
    except OSError as e:
        raise SpecstepError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("reasoning.serve").warning("listening on %s without an API key", args.host)
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from eval.report import write_outputs
    from eval.sweep import SweepConfig, run_sweep

    if args.limit is not None and args.limit < 1:
        raise SpecstepError(f"--limit must be at least 1, got {args.limit}")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cfg = SweepConfig(
        dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, seed=args.seed,
        synthetic_steps=args.steps, synthetic_split=args.split, draft=args.draft, target=args.target,
        policies=policies,
        thresholds=_floats(args.thresholds, "--thresholds"),
        escalation_rates=_floats(args.escalation_rates, "--escalation-rates"),
        router_options=router_options(args),
        limits={"max_steps": args.max_steps, "max_tokens": args.max_tokens, "step_tokens": args.step_tokens,
                "few_shot": args.few_shot},
    )
    records = run_sweep(cfg, args.out)
    points = write_outputs(records, args.out, cfg.draft, cfg.target)
    out = Console(highlight=False)
    for p in points:
        out.print(f"{p.config:>24s}  acc {100 * p.accuracy:5.1f}%  mean {p.mean_latency:6.2f}s  "
                  f"escalated {100 * p.escalation_rate:5.1f}%{'  pareto' if p.pareto else ''}")
    out.print(f"wrote {args.out}/records.jsonl, summary.json, summary.csv, curve.png, report.md")
    return 0


def _cmd_train_router(args: argparse.Namespace) -> int:
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


def _cmd_collect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from training.collect import collect, make_config

    if args.limit is not None and args.limit < 1:
        raise SpecstepError(f"--limit must be at least 1, got {args.limit}")
    cfg = make_config(
        dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, seed=args.seed, synthetic_steps=args.steps,
        synthetic_split=args.split, draft=args.draft, target=args.target, judge=args.judge,
        judge_options=_pairs(args.judge_opt, "--judge-opt"),
        target_samples=args.target_samples, temperature=args.temperature, max_steps=args.max_steps,
        max_tokens=args.max_tokens, step_tokens=args.step_tokens, few_shot=args.few_shot,
    )
    if not args.verbose:
        _quiet_hub_progress()
    s = collect(cfg, args.out)
    out = Console(highlight=False)
    out.print(f"{s.n_records} step records of {s.n_problems} problems in {s.traces} ({s.n_new_records} new; "
              f"{s.n_skipped} problems were already done); label=True for {100 * s.label_share:.1f}% of steps")
    return 0


def _cmd_testbed(args: argparse.Namespace) -> int:
    from training.testbed import TestbedConfig, train_testbed

    cfg = TestbedConfig(seed=args.seed)
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
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        if args.command == "models":
            return _cmd_models()
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "train-router":
            return _cmd_train_router(args)
        if args.command == "collect":
            return _cmd_collect(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "verdict":
            return _cmd_verdict(args)
        if args.command == "testbed":
            return _cmd_testbed(args)
        return _cmd_solve(args)
    except SpecstepError as e:
        sys.stderr.write(f"specstep: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("specstep: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
