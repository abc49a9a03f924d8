"""Choose testbed pair v2's checkpoints on validation problems (never on test problems).

    specstep testbed train --recipe v2 --only target --out DIR --keep-phases
    python benchmarks/testbed_choose.py --phases DIR/phases --what target --out runs/v2-choice
    # copy the chosen phases/target-K/target to DIR/target, then
    specstep testbed train --recipe v2 --only draft --out DIR --keep-phases
    python benchmarks/testbed_choose.py --phases DIR/phases --what draft --out runs/v2-choice

For every kept phase (DIR/phases/target-K/target, DIR/phases/draft-K/draft): three-step validation
problems solved by that model alone (greedy, the benchmark's limits), and each of their steps written
from the gold prefix (teacher-forced) and checked exactly; for a target, also its judge on each gold step
and on a corrupted twin (ROC-AUC, reported beside the choice, not part of it). Records are appended to OUT/records.jsonl
(resumable: a rerun measures only what is missing). The choice, printed with Wilson intervals:
- target: the phase that solves the most problems (the earliest on a tie);
- draft: among the phases right on >= 60% of steps and >= 25 points below the chosen target on
  problems, the one right on the most steps (the earliest on a tie); if none meets both, the one right
  on the most steps among those >= 25 points below the target, and if none is that far below, the one
  that solves the fewest problems (the goals missed, said so).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LIMITS = {"max_steps": 12, "max_tokens": 512, "step_tokens": 96}
STEP_GOAL, GAP_GOAL = 0.60, 0.25


class ChoiceRecord(BaseModel):
    """One model (a kept phase) on one validation problem."""

    what: str  # target | draft
    phase: int
    problem_id: str
    correct: bool  # solved alone
    steps_right: int  # operation steps written right from the gold prefix
    steps: int
    seconds: float
    judge_gold: list[bool] = []  # target: the judge on each gold step (True) and its corrupted twin (False)
    judge_scores: list[float] = []


def steps_from_gold(backend, problem, style: str) -> list[str]:
    """Each operation step as `backend` writes it after the gold prefix (greedy, the step cap), in order;
    the answer step is not asked for."""
    from eval.synthetic import gold_steps
    from reasoning.prompts import Prompt

    s = backend.open_session(Prompt.math(problem.question, 0))
    texts = []
    for step in gold_steps(problem, style)[:-1]:
        mark = s.n_tokens
        texts.append(s.generate(max_tokens=LIMITS["step_tokens"], stop=["\n\n"]).text)
        s.rollback(mark)
        s.append(step + "\n\n")
    s.close()
    return texts


def measure(what: str, phase: int, folder: Path, problems, dtype: str | None = None) -> list[ChoiceRecord]:
    from testbed import judge_pairs  # benchmarks/testbed.py

    from eval.synthetic import check_step, gold_steps
    from reasoning.api import Solver
    from reasoning.testbed import read_manifest

    spec = f"testbed-{what}?adapter={folder}" + (f"&dtype={dtype}" if dtype else "")
    alone = "target-only" if what == "target" else "draft-only"  # the other model is not loaded
    solver = Solver(draft=spec if what == "draft" else "testbed-draft", target=spec if what == "target"
                    else "testbed-target", router=alone, **LIMITS)
    backend = solver.target if what == "target" else solver.draft
    style = read_manifest(folder).step_style  # the gold prefix in the style the model was trained on
    out = []
    for p in problems:
        t0 = time.perf_counter()
        sol = solver.solve(p)
        correct = p.grade(sol.answer_text).correct
        gold = gold_steps(p, style)
        right = sum(check_step(p, i, text) for i, text in enumerate(steps_from_gold(backend, p, style)))
        # the target as judge, gold steps against corrupted twins (benchmarks/testbed.py's goal measure)
        gold_or_not, scores = ([], []) if what == "draft" else judge_pairs(backend, p, random.Random(f"judge/{p.id}"),
                                                                            style)
        out.append(ChoiceRecord(what=what, phase=phase, problem_id=p.id, correct=correct, steps_right=right,
                                steps=len(gold) - 1, seconds=round(time.perf_counter() - t0, 2),
                                judge_gold=gold_or_not, judge_scores=scores))
    return out


def _auc(sample: list[ChoiceRecord]) -> float | None:
    from training.train import roc_auc

    return roc_auc([g for r in sample for g in r.judge_gold], [x for r in sample for x in r.judge_scores])


def auc_interval(records: list[ChoiceRecord], other: list[ChoiceRecord] | None = None, n_boot: int = 1000,
                 seed: int = 0) -> tuple[float, float, float] | None:
    """The judge's ROC-AUC over the records' pairs and its 95% bootstrap interval over problems; with
    `other` (records of the same problems, in the same order), the AUC's difference from other's, paired
    (the same problems in every draw). None without judge pairs."""
    import numpy as np

    keep = [j for j, r in enumerate(records) if r.judge_scores and (other is None or other[j].judge_scores)]
    if not keep:
        return None

    def stat(idx) -> float | None:
        a = _auc([records[j] for j in idx])
        b = 0.0 if other is None else _auc([other[j] for j in idx])
        return None if a is None or b is None else a - b

    draws = np.random.default_rng(seed).integers(0, len(keep), size=(n_boot, len(keep)))
    boots = [x for x in (stat([keep[i] for i in d]) for d in draws) if x is not None]
    return stat(keep), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def table(records: list[ChoiceRecord], what: str) -> dict[int, dict]:
    from eval.stats import wilson

    rows = {}
    for k in sorted({r.phase for r in records if r.what == what}):
        rs = [r for r in records if r.what == what and r.phase == k]
        n, c = len(rs), sum(r.correct for r in rs)
        sr, st = sum(r.steps_right for r in rs), sum(r.steps for r in rs)
        rows[k] = {"n": n, "correct": c, "acc": c / n, "acc_ci": wilson(c, n), "steps_right": sr, "steps": st,
                   "step_acc": sr / st, "step_ci": wilson(sr, st), "auc": auc_interval(rs)}
    return rows


def paired_against(records: list[ChoiceRecord], what: str, chosen: int) -> None:
    """Each other phase against the chosen one on the same problems: exact McNemar on problems solved, and
    the judge's AUC difference (the same twins: each problem's are seeded by its id)."""
    from eval.stats import mcnemar

    rec = {(r.phase, r.problem_id): r for r in records if r.what == what}
    for k in sorted({ph for ph, _ in rec} - {chosen}):
        ids = sorted(i for ph, i in rec if ph == k and (chosen, i) in rec)
        m = mcnemar([rec[(chosen, i)].correct for i in ids], [rec[(k, i)].correct for i in ids])
        line = (f"phase {chosen} against phase {k} on {len(ids)} problems: {m.only_a} solved only by {chosen}, "
                f"{m.only_b} only by {k}; exact McNemar p = {m.p_value:.3g}")
        d = auc_interval([rec[(chosen, i)] for i in ids], [rec[(k, i)] for i in ids])
        print(line + (f"; judge ROC-AUC {d[0]:+.3f} (95% CI {d[1]:+.3f} to {d[2]:+.3f}, paired)" if d else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", required=True, help="the folder --keep-phases wrote (DIR/phases)")
    ap.add_argument("--what", choices=("target", "draft"), required=True)
    ap.add_argument("--n", type=int, default=40, help="three-step validation problems (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="the problems' seed (default 0)")
    ap.add_argument("--out", default="runs/v2-choice", help="records folder (resumable; one per --dtype)")
    ap.add_argument("--dtype", help="run the models in this torch dtype (e.g. bfloat16), as the benchmark will")
    ap.add_argument("--concurrency", type=int, default=8, help="problems measured side by side, their decoding "
                    "batched (the same records as one at a time; default 8)")
    args = ap.parse_args()
    if args.concurrency < 1:
        ap.error(f"--concurrency must be at least 1, got {args.concurrency}")
    logging.basicConfig(level=logging.WARNING)
    import torch

    from eval.synthetic import generate
    from reasoning import jsonl
    from reasoning.batching import for_each

    torch.set_num_threads(2)
    phases = Path(args.phases)
    kept = sorted((int(d.name.rsplit("-", 1)[1]), d / args.what) for d in phases.glob(f"{args.what}-*")
                  if (d / args.what).is_dir())
    if not kept:
        sys.exit(f"testbed_choose: no {args.what}-K/{args.what} folders in {phases}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    problems = generate(args.n, steps=3, seed=args.seed, split="val")
    done = jsonl.read_values(path, ChoiceRecord.model_validate_json, "not a choice record")
    lock = threading.Lock()
    for k, folder in kept:
        have = {r.problem_id for r in done if (r.what, r.phase) == (args.what, k)}
        todo = [p for p in problems if p.id not in have]

        def one(p, k=k, folder=folder):  # one problem a write: a crash loses at most the problems in flight
            rec = measure(args.what, k, folder, [p], args.dtype)
            with lock:
                jsonl.append(path, rec)
                done.extend(rec)

        for_each(one, todo, args.concurrency)
        print(f"{args.what} phase {k}: measured", file=sys.stderr)
    ids = {p.id for p in problems}
    done = [r for r in done if r.problem_id in ids]
    rows = table(done, args.what)
    print(f"| {args.what} phase | problems solved (95% CI) | steps right (95% CI) | judge ROC-AUC (95% CI) |")
    print("| --- | --- | --- | --- |")
    for k, r in rows.items():
        auc = f"{r['auc'][0]:.3f} ({r['auc'][1]:.3f}-{r['auc'][2]:.3f})" if r["auc"] else ""
        print(f"| {k} | {r['correct']}/{r['n']} ({100 * r['acc']:.0f}%; {100 * r['acc_ci'][0]:.0f}-"
              f"{100 * r['acc_ci'][1]:.0f}) | {r['steps_right']}/{r['steps']} ({100 * r['step_acc']:.0f}%; "
              f"{100 * r['step_ci'][0]:.0f}-{100 * r['step_ci'][1]:.0f}) | {auc} |")
    if args.what == "target":
        best = max(rows, key=lambda k: (rows[k]["correct"], -k))
        print(f"chosen target: phase {best} ({rows[best]['correct']}/{rows[best]['n']} val problems)")
        paired_against(done, args.what, best)
        return
    targets = table(done, "target")  # the records read above hold the target phases too
    if not targets:
        sys.exit("testbed_choose: measure the target phases first (--what target)")
    t = targets[max(targets, key=lambda k: (targets[k]["correct"], -k))]["acc"]
    ok = [k for k, r in rows.items() if r["step_acc"] >= STEP_GOAL and r["acc"] <= t - GAP_GOAL]
    if ok:
        best = max(ok, key=lambda k: (rows[k]["steps_right"], -k))
        print(f"chosen draft: phase {best}")
        return
    print(f"no draft phase is right on >= {STEP_GOAL:.0%} of steps and >= {100 * GAP_GOAL:.0f} points below "
          f"the target ({100 * t:.0f}%)")
    # the gap is what the pair is for: the steps goal gives way first, then the gap
    below = [k for k, r in rows.items() if r["acc"] <= t - GAP_GOAL]
    best = (max(below, key=lambda k: (rows[k]["steps_right"], -k)) if below
            else min(rows, key=lambda k: (rows[k]["correct"], k)))
    print(f"chosen draft (goals missed): phase {best}")


if __name__ == "__main__":
    main()
