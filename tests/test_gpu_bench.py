"""benchmarks/gpu.py, the GPU benchmark, run here on toy shapes on the CPU: it builds models from configs with
random weights through the transformers engine (`init=random`), and every measurement runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu  # noqa: E402


def qwen2_params(shape: dict, vocab: int = gpu.VOCAB) -> int:
    """Parameters a forward pass multiplies by, from a Qwen2 shape (biases on q, k, v; an untied input
    embedding is a lookup)."""
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return n * layer + h + vocab * h


def test_the_shapes_are_the_real_models_sizes():
    # Qwen2.5 model cards: 1.54B, 14.7B and 32.5B parameters with the embeddings (13.1B / 31.0B without)
    assert qwen2_params(gpu.SHAPES["1.5b"]) == pytest.approx(1.54e9, rel=0.01)  # tied: the embedding is the head
    untied = {k: qwen2_params(gpu.SHAPES[k]) + gpu.VOCAB * gpu.SHAPES[k]["hidden_size"] for k in ("14b", "32b")}
    assert untied["14b"] == pytest.approx(14.77e9, rel=0.01) and untied["32b"] == pytest.approx(32.76e9, rel=0.01)


def test_the_tokenizer_has_the_real_vocabulary_size_and_round_trips_text():
    tok = gpu.tokenizer(gpu.VOCAB)
    assert len(tok) == gpu.VOCAB and tok.eos_token_id == gpu.VOCAB - 1
    text = "Tom buys 4 pens.\n\nHe pays 20 - 12 = 8 dollars."
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_toy_shapes_on_the_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu", "--dtype",
                        "float32", "--out", str(tmp_path), "--steps", "3", "--step-tokens", "8", "--problems", "3",
                        "--batch", "3", "--contexts", "64,256"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["params"] == {"draft": qwen2_params(gpu.SHAPES["tiny-draft"]),
                             "target": qwen2_params(gpu.SHAPES["tiny-target"])}
    assert [row["context"] for row in res["per_token"]["target"]] == [64, 256]
    assert all(row["decode_s_per_token"] > 0 for rows in res["per_token"].values() for row in rows)
    assert res["kv_reuse"]["ends"] == ["token_cap"] and res["kv_reuse"]["context_tokens"] == 6 * 8
    assert set(res["policies"]) == {"specreason", "random", "target-only", "draft-only"}
    assert res["policies"]["specreason"]["judge_s_per_step"] > 0 == res["policies"]["random"]["judge_s_per_step"]
    assert res["batched"]["same_text"] == 3  # greedy: side by side writes what one at a time writes
    from eval.latency import read_profile

    profile = read_profile(tmp_path / "profile.json")
    assert {"draft", "target"} <= set(profile.stages)
    assert "ms a token (draft / target" in r.stdout and "batched stepping" in r.stdout
