"""Images on vLLM (offline engine and `vllm serve` through the OpenAI backend), with a tiny random Idefics3
the tests build. Runs where vLLM is installed (`.ci/run` runs it in `.venv-vllm`)."""

import math
import os

import pytest
from PIL import Image

from reasoning.prompts import Prompt

from .servers import start_vllm_server
from .tiny_idefics3 import build_idefics3

pytestmark = pytest.mark.slow

if "vllm" not in os.environ.get("SPECSTEP_REQUIRE_ENGINES", ""):
    pytest.importorskip("vllm", reason="vLLM is not installed in this environment (see setup-vllm.sh)")

QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return build_idefics3(tmp_path_factory.mktemp("idefics3") / "model")


@pytest.fixture(scope="module")
def vvlm(vlm_dir):
    from reasoning.backends import load_backend

    return load_backend(f"vllm:{vlm_dir}?kv_cache_gb=1&max_model_len=1024&dtype=float32")


def _prompt(*colors):
    return Prompt(QUESTION, "Answer.", (), images=tuple(Image.new("RGB", (40, 30), c) for c in colors))


def test_images_reach_the_model_and_sessions_roll_back(vvlm):
    red, blue = vvlm.open_session(_prompt((200, 10, 10))), vvlm.open_session(_prompt((10, 10, 200)))
    assert "<image>" in vvlm.render(_prompt((0, 0, 0)))
    cands = ["a", "b", "c", "d"]
    pr, _ = red.next_token_logprobs(cands)
    pb, _ = blue.next_token_logprobs(cands)
    assert max(abs(pr[c] - pb[c]) for c in cands) > 1e-4  # the image changes the distribution
    mark = red.n_tokens
    g = red.generate(max_tokens=6)
    assert len(g.token_ids) == 6 and red.n_tokens == mark + 6
    red.rollback(mark)
    first = red.score("red").logprobs
    red.rollback(mark)
    assert red.score("red").logprobs == pytest.approx(first, abs=1e-5) and len(first) == 3


@pytest.fixture(scope="module")
def vlm_server(vlm_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm-vlm") / "server.log"
    proc, base = start_vllm_server(vlm_dir, "tiny-vlm", log, max_len=1024)
    yield base
    proc.terminate()
    proc.wait(timeout=60)


def test_openai_backend_sends_images_as_image_url_parts(vlm_server, vvlm, vlm_dir):
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    b = OpenAIBackend(parse_spec(f"openai:tiny-vlm?base_url={vlm_server}&tokenizer={vlm_dir}"))
    p = _prompt((200, 10, 10))
    s, ref = b.open_session(p), vvlm.open_session(p)
    cands = ["a", "b", "c", "d"]
    got, _ = s.next_token_logprobs(cands)
    want, _ = ref.next_token_logprobs(cands)
    assert got == pytest.approx(want, abs=0.02)  # same image, same model: the image arrived intact
    g = s.generate(max_tokens=5)
    assert g.finish_reason == "length" and g.text
    mark = s.n_tokens
    sc = s.score("red")  # prompt logprobs of a continued assistant message
    assert len(sc.logprobs) == 3 and all(lp <= 0 for lp in sc.logprobs)
    s.rollback(mark)
    ref.append(g.text)
    assert sc.logprobs == pytest.approx(ref.score("red").logprobs, abs=0.05)


def test_verdict_with_vision_experts_on_vllm(vvlm, vlm_dir):
    from reasoning.verdict import Verdict

    spec = f"vllm:{vlm_dir}?kv_cache_gb=1&max_model_len=1024&dtype=float32"
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    r = Verdict([spec], spec, samples=3, m=2, max_tokens=12, verdict_tokens=8).run(QUESTION, [img])
    assert len(r.candidates) == 3 and r.costs.candidates.calls == 3 and r.images[0].startswith("pil:")
    assert all(math.isfinite(x) for row in r.nll for x in row if x is not None)
