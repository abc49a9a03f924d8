"""Costs at real scale, for a GPU machine with PyTorch and transformers and nothing else (no vLLM, no
network, no weights): real model shapes with random weights, built from a config on the GPU, run through
specstep's transformers engine (`hf:DIR?init=random&device=cuda&dtype=bfloat16`).

    python benchmarks/gpu.py --out runs/gpu                  # Qwen2.5-1.5B draft, Qwen2.5-14B target shapes
    python benchmarks/gpu.py --target 32b --out runs/gpu-32b
    python benchmarks/gpu.py --tiny --device cpu --out DIR   # toy shapes on the CPU (the tests run this)

Measures, one thing at a time: (1) per-token prefill and decode seconds of each model at a short and a
long context, and their ratio (the draft's cost per token over the target's, c in the bound
1/(c + (1 - a) + j)); (2) KV reuse: seconds per token of a late step over an early one in one long
solution; (3) the target as SpecReason's judge: seconds per judged step against a target step, and the
controller's overhead per step (wall seconds outside model calls); (4) batched stepping: problems per
second solving side by side (`solve_many`) over one at a time; (5) a latency profile of the pair fitted
on the solves run one at a time (profile.json, for `--latency-profile`). Quality is meaningless here
(random weights: steps end at fixed caps, end-of-sequence ignored); costs are real. Writes
OUT/results.json and OUT/profile.json and prints a summary. About 4 minutes on one H100 for 1.5B/14B
(estimated: it has not run on a GPU yet; see the README, "On GPUs").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from itertools import chain, islice
from pathlib import Path

# Qwen2.5 shapes (config.json of each model); vocabulary 152064 for both, so that they share a tokenizer
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, tie_word_embeddings=False),
    "14b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
                num_key_value_heads=8, tie_word_embeddings=False),
    "32b": dict(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                num_key_value_heads=8, tie_word_embeddings=False),
    # toy shapes for a CPU check of the script itself
    "tiny-draft": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, tie_word_embeddings=True),
    "tiny-target": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, tie_word_embeddings=False),
}
VOCAB = 152064
DELIMITER = "\n<end of step 7f3a>\n"  # random weights never write it: every step ends at its token cap
QUESTION = "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. What change?"


def tokenizer(vocab: int):
    """A byte-level BPE tokenizer with exactly `vocab` tokens (bytes, byte pairs, then byte triples, and an
    end-of-sequence token): the vocabulary size, hence the output layer's cost, of the real models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pairs = [(a, b) for a in alphabet for b in alphabet]
    triples = ((a + b, c) for a, b in pairs for c in alphabet)
    merges = list(islice(chain(pairs, triples), vocab - 1 - len(alphabet)))
    tokens = alphabet + [a + b for a, b in merges]
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


def write_model(folder: Path, shape: str, tok) -> Path:
    """A directory with a Qwen2 config.json of `shape` and the tokenizer: what `init=random` loads."""
    from transformers import Qwen2Config

    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, rope_theta=1e6, **SHAPES[shape])
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def limits(steps: int, step_tokens: int) -> dict:
    return dict(max_steps=steps, max_tokens=steps * step_tokens, step_tokens=step_tokens, delimiter=DELIMITER,
                few_shot=0, stop_on_answer=False, force_answer=False, ignore_eos=True, stop_on_repeat=False,
                end_stops=())


def per_token(backend, context: int, new: int = 32) -> dict:
    """Prefill seconds per token of a `context`-token prompt, decode seconds per token of `new` tokens after it
    (the best of two tries)."""
    best = None
    for _ in range(2):
        session = backend.open_session_ids(([11, 22, 33] * context)[:context])
        t0 = time.perf_counter()
        session.append_ids([44])
        gen = session.generate(max_tokens=new, ignore_eos=True)
        wall = time.perf_counter() - t0
        u = gen.usage
        prefill = u.prefill_seconds if u.prefill_seconds is not None else 0.0
        row = {"context": context, "prefill_s_per_token": prefill / max(1, u.input_tokens),
               "decode_s_per_token": (wall - prefill) / max(1, u.output_tokens)}
        if best is None or row["decode_s_per_token"] < best["decode_s_per_token"]:
            best = row
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="1.5b", choices=[s for s in SHAPES if not s.startswith("tiny")])
    ap.add_argument("--target", default="14b", choices=[s for s in SHAPES if not s.startswith("tiny")])
    ap.add_argument("--tiny", action="store_true", help="toy shapes (a check of the script on a CPU)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--contexts", default="512,4096", help="contexts of the per-token measurement")
    ap.add_argument("--steps", type=int, default=8, help="steps of each solve")
    ap.add_argument("--step-tokens", type=int, default=64, help="tokens of each step")
    ap.add_argument("--problems", type=int, default=8, help="problems of the batched-stepping measurement")
    ap.add_argument("--batch", type=int, default=8, help="problems side by side in the batched measurement")
    ap.add_argument("--out", required=True, help="folder for the models' configs, results.json and profile.json")
    args = ap.parse_args()
    if args.steps < 3 or args.step_tokens < 1 or args.problems < 1 or args.batch < 1:
        print("gpu.py: --steps must be >= 3, --step-tokens, --problems and --batch >= 1", file=sys.stderr)
        sys.exit(2)
    contexts = [int(c) for c in args.contexts.split(",") if c]
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here (use --device cpu with --tiny for a check of the script)", file=sys.stderr)
        sys.exit(2)
    from eval.latency import fit_profile, write_profile
    from reasoning import Solver
    from reasoning.backends import load_backend
    from reasoning.types import Problem

    out = Path(args.out)
    shapes = ("tiny-draft", "tiny-target") if args.tiny else (args.draft, args.target)
    t_start = time.perf_counter()
    tok = tokenizer(VOCAB)
    opts = f"init=random&device={args.device}&dtype={args.dtype}"
    draft, target = (f"hf:{write_model(out / 'models' / s, s, tok)}?{opts}" for s in shapes)
    results: dict = {"draft": shapes[0], "target": shapes[1], "device": args.device, "dtype": args.dtype,
                     "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    t0 = time.perf_counter()
    d, t = load_backend(draft), load_backend(target)
    results["load_seconds"] = time.perf_counter() - t0
    results["params"] = {"draft": d.n_params, "target": t.n_params}

    # (1) per-token costs
    rows = {name: [per_token(b, c) for c in contexts] for name, b in (("draft", d), ("target", t))}
    results["per_token"] = rows
    results["draft_over_target_decode"] = [a["decode_s_per_token"] / b["decode_s_per_token"]
                                           for a, b in zip(rows["draft"], rows["target"])]

    # (2) KV reuse: a late step's seconds per token over an early one's, one long draft-only solution
    n_long = max(args.steps * 2, 6)
    sol = Solver(draft, target, "draft-only", **limits(n_long, args.step_tokens)).solve(QUESTION)
    spt = [s.costs.draft.seconds / max(1, s.costs.draft.output_tokens) for s in sol.steps]
    results["kv_reuse"] = {"steps": len(spt), "late_over_early": spt[-1] / spt[1],
                           "context_tokens": sum(s.tokens for s in sol.steps),
                           "ends": sorted({s.end for s in sol.steps})}

    # (3) the judge's and the controller's cost per step; mixed authors
    one_at_a_time = []
    per_policy = {}
    Solver(draft, target, "specreason", 0.5, **limits(3, args.step_tokens)).solve(QUESTION)  # warm-up, not counted
    for router, tau in (("specreason", 0.5), ("random", 0.5), ("target-only", None), ("draft-only", None)):
        solver = Solver(draft, target, router, tau, **limits(args.steps, args.step_tokens))
        sols = [solver.solve(Problem(question=f"{QUESTION} ({k})", id=str(k))) for k in range(2)]
        one_at_a_time += sols
        steps = sum(len(s.steps) for s in sols)
        wall = sum(s.wall_seconds for s in sols)
        inside = sum(s.costs.seconds for s in sols)
        per_policy[router] = {
            "steps": steps, "wall_s_per_step": wall / steps,
            "judge_s_per_step": sum(s.costs.judge.seconds for s in sols) / steps,
            "target_s_per_step": sum(s.costs.target.seconds for s in sols) / steps,
            "draft_s_per_step": sum(s.costs.draft.seconds for s in sols) / steps,
            "controller_overhead_s_per_step": (wall - inside) / steps,
            "controller_overhead_share": (wall - inside) / wall,
        }
    results["policies"] = per_policy

    # (4) batched stepping: the same problems one at a time and side by side
    problems = [Problem(question=f"{QUESTION} [{k}]", id=f"b{k}") for k in range(args.problems)]
    solver = Solver(draft, target, "random", 0.5, **limits(max(3, args.steps // 2), args.step_tokens))
    t0 = time.perf_counter()
    alone = [solver.solve(p) for p in problems]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = solver.solve_many(problems, batch_size=args.batch)
    t_together = time.perf_counter() - t0
    results["batched"] = {"problems": len(problems), "batch": args.batch, "seconds_one_at_a_time": t_alone,
                          "seconds_side_by_side": t_together, "speedup": t_alone / t_together,
                          "same_text": sum(a.text == b.text for a, b in zip(alone, together))}
    one_at_a_time += alone

    # (5) the pair's latency profile, fitted on the solves run one at a time
    profile = fit_profile(one_at_a_time, draft, target, machine=results["gpu"] or args.device)
    write_profile(profile, out / "profile.json")
    results["profile"] = json.loads(profile.model_dump_json())
    results["total_seconds"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"# {shapes[0]} draft, {shapes[1]} target ({d.n_params / 1e9:.2f}B / {t.n_params / 1e9:.2f}B parameters), "
          f"{args.dtype} on {results['gpu'] or args.device}; random weights")
    for a, b in zip(rows["draft"], rows["target"]):
        da, db = a["decode_s_per_token"], b["decode_s_per_token"]
        print(f"context {a['context']}: decode {1e3 * da:.2f} / {1e3 * db:.2f} ms a token (draft / target, ratio "
              f"{da / db:.3f}); prefill {1e3 * a['prefill_s_per_token']:.3f} / {1e3 * b['prefill_s_per_token']:.3f} "
              "ms a token")
    kv = results["kv_reuse"]
    print(f"KV reuse: step {kv['steps']} over step 2, seconds per token: {kv['late_over_early']:.2f} "
          f"({kv['context_tokens']} tokens of solution)")
    for name, p in per_policy.items():
        print(f"{name}: {p['wall_s_per_step']:.3f} s a step (draft {p['draft_s_per_step']:.3f}, judge "
              f"{p['judge_s_per_step']:.3f}, target {p['target_s_per_step']:.3f}; controller "
              f"{1e3 * p['controller_overhead_s_per_step']:.1f} ms, {100 * p['controller_overhead_share']:.1f}%)")
    b = results["batched"]
    print(f"batched stepping: {b['problems']} problems {b['seconds_one_at_a_time']:.1f} s one at a time, "
          f"{b['seconds_side_by_side']:.1f} s {b['batch']} side by side: {b['speedup']:.2f}x "
          f"({b['same_text']}/{b['problems']} the same text)")
    print(f"profile: {out / 'profile.json'}; total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
