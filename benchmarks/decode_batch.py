"""What a batch buys one decode step of a transformers model here: milliseconds per step, and per token,
with 1, 2, 4, 8 and 16 rows decoding after the same context, measured side by side in one run.

    .venv/bin/python benchmarks/decode_batch.py --model hf:testbed-target --context 300

The rows are what `reasoning.backends.hf_batch` runs for solves side by side; the ratio per token is
the most continuous batching can give a decode-bound solve on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="hf:testbed-target")
    ap.add_argument("--context", type=int, default=300, help="tokens of context each row decodes after")
    ap.add_argument("--steps", type=int, default=12, help="decode steps timed per batch size (median)")
    ap.add_argument("--rows", default="1,2,4,8,16")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from transformers import DynamicCache

    from reasoning.backends import load_backend

    model = load_backend(args.model).model
    ctx = torch.randint(100, 1000, (1, args.context), generator=torch.Generator().manual_seed(0))
    base = None
    print(f"{args.model}, {args.context} tokens of context, median of {args.steps} steps")
    for b in (int(x) for x in args.rows.split(",")):
        with torch.inference_mode():
            cache = DynamicCache()
            model(input_ids=ctx.repeat(b, 1), use_cache=True, past_key_values=cache)
            tok = torch.full((b, 1), 13)
            times = []
            for t in range(args.steps):
                t0 = time.perf_counter()
                model(input_ids=tok, attention_mask=torch.ones(b, args.context + 1 + t, dtype=torch.long),
                      position_ids=torch.full((b, 1), args.context + t), use_cache=True, past_key_values=cache,
                      logits_to_keep=1)
                times.append(time.perf_counter() - t0)
        ms = 1e3 * statistics.median(times)
        base = base or ms
        print(f"{b:3d} rows: {ms:7.1f} ms a step, {ms / b:6.1f} ms a token, "
              f"{base * b / ms:5.2f}x the tokens/s of one row")


if __name__ == "__main__":
    main()
