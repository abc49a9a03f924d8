"""Head to head: every step policy, and the target with token-level speculative decoding, on the same
held-out testbed problems.

    python benchmarks/head_to_head.py --n 200 --n-val 50 --out runs/testbed

Runs, into the folder of benchmarks/testbed.py (whose records it reuses: same problems, same
limits), each policy's thresholds chosen on validation problems first (as benchmarks/testbed.py):
draft-only, target-only, specreason, arbitrage, oracle and random (the anchors); first-token at
entropy thresholds; cascade (as ConfSpec publishes it: the draft judges its own step, then the shipped
Arbitrage router's gate, then the target's judge) at judge thresholds, and `cascade-logprob` (the
draft's mean token log-probability as the first gate); best-of-n (n = 3) as published (SpecCoT: the target
selects a candidate in one call, or rejects them all) at thresholds on the chosen candidate's
probability, and `best-of-n-judge` (each candidate scored by the target's judge) at judge
thresholds; handoff at entropy thresholds (two-way, as R-Stitch publishes it; `handoff-one`: the one-way
variant); lookahead (k = 3, as published: the target's step at each drafted prefix, then its
aligned/unaligned verdict) at thresholds on that verdict, and `lookahead-exact` (the exact comparison
only, lossless against the target's greedy steps).
Variants run in their own folders (OUT/NAME), which start with OUT's target-only records. Then,
in OUT/token-spec (another target spec, so another folder), the baseline users would pick instead:
the target with token-level speculative decoding from the same draft
(`hf:testbed-target?assistant=testbed-draft`, greedy, lossless), and step-level policies composed
with it; their configurations are named `POLICY+token-spec`.
Prints eval's report: the configuration table (accuracy with its interval, the paired difference
from target-only with McNemar's test, latency, modeled latency, FLOPs, escalation) and the policy
tables (speedup over target-only at matched accuracy, area score, and policy against policy at the
best accuracy both reach, each with a paired-bootstrap 95% interval); the curve holds every frontier.

The testbed pair is tiny models on a synthetic task: the numbers compare the policies' machinery,
not their quality on real models. RSD is not run: no process reward model exists for the testbed.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testbed  # noqa: E402  (benchmarks/testbed.py: the sweep)


def only_of(args) -> set[str]:
    return {x.strip() for x in args.policies.split(",") if x.strip()}


def renamed(record, name: str):
    """A record under another policy name, its key too (records are told apart by key: a variant's
    `problem|handoff@0.5` must not replace the policy's own)."""
    problem, config = record.key.split("|", 1)
    return record.model_copy(update={"policy": name, "key": f"{problem}|{name}{config[len(record.policy):]}"})


def share_target_only(src: Path, dst: Path) -> None:
    """Start a variant's folder with the target-only records of `src` (the same problems, models and limits:
    router options are not part of a folder's identity), so that target-only is not solved again there."""
    if (dst / "records.jsonl").exists() or not (src / "records.jsonl").exists():
        return
    from eval.records import read_records
    from reasoning import jsonl

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "run.json", dst / "run.json")
    kept = [r for r in read_records(src / "records.jsonl") if r.policy == "target-only"]
    jsonl.replace(dst / "records.jsonl", b"".join(jsonl.line(r) for r in kept))


def main() -> None:
    ap = testbed.parser(__doc__)
    ap.add_argument("--first-token", default="0.001,0.003,0.01,0.04",
                    help="first-token entropy thresholds (nats; the testbed draft's are tiny)")
    ap.add_argument("--cascade", default="0.6,0.9", help="cascade judge thresholds")
    ap.add_argument("--best-of-n", default="0,0.5",
                    help="best-of-n's thresholds on the selected candidate's probability (0: the paper's)")
    ap.add_argument("--best-of-n-judge", default="0.6,0.9", help="best-of-n-judge's judge thresholds")
    ap.add_argument("--handoff", default="0.5,1.0,1.5,2.5", help="handoff entropy thresholds (nats)")
    ap.add_argument("--lookahead", default="0.5,0.9,0.99",
                    help="lookahead's thresholds on the target's probability that two steps are aligned")
    ap.add_argument("--random-rates", default="0.15,0.3,0.45,0.6", help="random's escalation rates")
    ap.add_argument("--spec-tokens", type=int, default=2,
                    help="tokens the assistant proposes per target pass (2 measured best on this CPU)")
    ap.add_argument("--token-spec-handoff", default="0.5,1.0",
                    help="handoff thresholds composed with token-level speculation")
    ap.add_argument("--policies", default="", help="run only these (comma-separated; draft-only and target-only "
                    "always run; `+token-spec` for the compositions); default: all")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(2)
    from eval.report import write_outputs

    out, n, steps = Path(args.out), args.n, args.steps
    d_spec, t_spec = testbed.pair_specs(args.pair, args.dtype)
    only = only_of(args)
    if (args.pair or args.dtype) and (not only or "+token-spec" in only):
        # the assistant is a spec inside the target's spec: it cannot carry options of its own
        ap.error("token-level speculation runs on the shipped pair only: leave out --pair/--dtype, or "
                 "--policies without +token-spec")

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x]

    kw = {"n_val": args.n_val, "draft": d_spec, "target": t_spec, "concurrency": args.concurrency,
          "latency_profile": args.latency_profile}

    def sweep(folder, policy, **more):
        return testbed._sweep(folder, n, steps, [policy], **kw, **more) if not only or policy in only else []

    def variant(policy, name, **more):
        """A policy with other options, in its own folder (records are named by policy and threshold), with
        OUT's target-only records to choose against; its records renamed `name`."""
        if only and name not in only:
            return []
        share_target_only(out, out / name)
        recs = testbed._sweep(out / name, n, steps, [policy], **kw, **more)
        return [renamed(r, name) for r in testbed.unique(recs) if r.policy == policy]

    recs = testbed._sweep(out, n, steps, ["draft-only", "target-only"], **kw)
    recs += sweep(out, "oracle")
    recs += sweep(out, "specreason", thresholds=[0.3, 0.6, 0.9])
    recs += sweep(out, "arbitrage", rates=[0.15, 0.3, 0.45], options={"model": args.router})
    recs += sweep(out, "first-token", thresholds=floats(args.first_token))
    # cascade as published (the draft judges its own step), and with the earlier gate, the proposal's mean
    # token log-probability (`cascade-logprob`, its own folder)
    recs += sweep(out, "cascade", thresholds=floats(args.cascade), options={"arbitrage": args.router})
    recs += variant("cascade", "cascade-logprob", thresholds=floats(args.cascade),
                    options={"gate": "logprob", "arbitrage": args.router, "confident": "-0.02"})
    # best-of-n as published (the target selects), and per-candidate judging in its own folder
    recs += sweep(out, "best-of-n", thresholds=floats(args.best_of_n), options={"n": "3", "select": "target"})
    recs += variant("best-of-n", "best-of-n-judge", thresholds=floats(args.best_of_n_judge),
                    options={"n": "3", "select": "judge"})
    recs += sweep(out, "handoff", thresholds=floats(args.handoff))  # two-way, as R-Stitch publishes it
    recs += variant("handoff", "handoff-one", thresholds=floats(args.handoff), options={"way": "one"})
    # lookahead as published: the target's step at each drafted prefix, then the target's aligned/unaligned
    # verdict (thresholds on its probability of "aligned"); and with the exact comparison only, in its own
    # folder (records are named by policy and threshold)
    recs += sweep(out, "lookahead", thresholds=floats(args.lookahead), options={"k": "3"})
    recs += variant("lookahead", "lookahead-exact", options={"k": "3", "verifier": "none"})
    recs += sweep(out, "random", rates=floats(args.random_rates))
    # the target with token-level speculative decoding, alone and under step-level policies; their
    # thresholds are chosen in their own folder, against that target (OUT/token-spec/selection.json)
    if not only or "+token-spec" in only:
        spec_target = f"hf:{testbed.TARGET}?assistant={testbed.DRAFT}&spec_tokens={args.spec_tokens}"
        tok = out / "token-spec"
        # token-level speculation decodes alone (not batched), and its target is another model to profile
        tkw = {**kw, "target": spec_target, "concurrency": 1, "latency_profile": None}
        composed = testbed._sweep(tok, n, steps, ["target-only"], **tkw)
        composed += testbed._sweep(tok, n, steps, ["arbitrage"], rates=[0.3, 0.45], options={"model": "testbed"},
                                   **tkw)
        composed += testbed._sweep(tok, n, steps, ["handoff"], thresholds=floats(args.token_spec_handoff), **tkw)
        write_outputs(testbed.unique(composed), tok, testbed.DRAFT, spec_target)
        recs += [renamed(r, f"{r.policy}+token-spec") for r in testbed.unique(composed) if r.split == "test"]
    profile = None
    if args.latency_profile:
        from eval.latency import read_profile

        profile = read_profile(args.latency_profile)
    write_outputs(testbed.unique(recs), out, d_spec, t_spec, profile)
    head = [f"# head to head: {d_spec} -> {t_spec}, {n} test {steps}-step problems, thresholds "
            f"chosen on {args.n_val} validation problems", ""]
    body = (out / "report.md").read_text().splitlines()
    print("\n".join(body))
    (out / "head_to_head.md").write_text("\n".join(head + body) + "\n")


if __name__ == "__main__":
    main()
