"""The OpenAI-compatible backend against a real server (llama-cpp-python's, bundled SmolLM2) on 127.0.0.1."""

import math
import re
import subprocess
import sys
import time

import pytest

from reasoning.prompts import Prompt

from .conftest import QUESTION
from .servers import Proxy, free_port, start_llama_server

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from reasoning.backends.llamacpp import gguf_path
    from reasoning.specs import parse_spec

    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, base = start_llama_server(gguf_path(parse_spec("llamacpp:smollm2-135m")), "smol", log)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def proxy(server):
    p = Proxy(server)
    yield p
    p.close()


def backend(base: str, **opts):
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    query = "&".join(f"{k}={v}" for k, v in {"base_url": base, "tokenizer": "smollm2-135m", **opts}.items())
    return OpenAIBackend(parse_spec(f"openai:smol?{query}"))


def test_steps_stop_strings_logprobs_and_usage(server, smol):
    b = backend(server)
    assert b.chat and b.render(Prompt.math(QUESTION)) == smol.render(Prompt.math(QUESTION))
    s = b.open_session(Prompt.math(QUESTION))
    assert s.n_tokens == smol.open_session(Prompt.math(QUESTION)).n_tokens
    g = s.generate(max_tokens=60, stop=["\n\n"])
    assert g.finish_reason == "stop" and g.stop == "\n\n" and g.text.endswith("\n\n") and s.text == g.text
    assert len(g.token_ids) == smol.count_tokens(g.text)
    assert len(g.logprobs) == len(g.entropies) > 0 and all(lp <= 0 for lp in g.logprobs)
    assert all(e >= 0 for e in g.entropies)
    assert g.usage.input_tokens == s.n_tokens - len(g.token_ids)  # first call: the whole prompt is new
    mark = s.n_tokens
    g2 = s.generate(max_tokens=8)
    assert g2.finish_reason == "length" and g2.usage.input_tokens == 0 and g2.usage.output_tokens == 8
    s.rollback(mark)
    assert s.text == g.text


def test_judge_distribution_matches_the_same_model_on_llama_cpp(server):
    from reasoning.backends import load_backend

    b = backend(server)
    local = load_backend("llamacpp:smollm2-135m")
    digits = [str(d) for d in range(10)]
    got = {}
    for eng in (b, local):
        s = eng.open_session(Prompt.math(QUESTION))
        s.append("She has 5 + 7 = 12 balloons, and 12 - 3 = 9 are left. The answer is ")
        got[eng], _ = s.next_token_logprobs(digits)
    assert math.fsum(math.exp(v) for v in got[b].values()) <= 1 + 1e-6
    assert max(got[b], key=got[b].get) == max(got[local], key=got[local].get)
    top = sorted(got[local], key=got[local].get, reverse=True)[:3]
    for d in top:  # the likely digits agree (same weights, prefill batching differs)
        assert got[b][d] == pytest.approx(got[local][d], abs=0.3)


def test_scoring_is_refused_with_one_clear_error_on_this_server(server):
    from reasoning.backends.openai import ServerError

    s = backend(server).open_session(Prompt.math(QUESTION))
    with pytest.raises(ServerError, match="wrong prompt logprobs"):
        s.score("The answer is 9.")


@pytest.mark.parametrize("shifted", [False, True])
def test_echoed_logprobs_are_probed_once_per_server_before_scoring(monkeypatch, shifted):
    """A stand-in server whose words are tokens: it echoes each prompt token with its own logprob, or (shifted,
    as llama-cpp-python's server) with the next token's; after "The capital of France is" it is sure of " Paris"."""
    import re

    from reasoning.backends.openai import ECHO_PROBE, OpenAIBackend, ServerError
    from reasoning.specs import parse_spec

    def lp(before: list[str], token: str) -> float:
        return -0.1 if "".join(before) == ECHO_PROBE and token == " Paris" else -7.0

    def completion(url, body, extra=None):
        sent.append(body)
        toks = re.findall(r"\s?\S+", body["prompt"])
        if not body.get("echo"):
            return {"text": " Paris", "logprobs": {"tokens": [" Paris"], "token_logprobs": [lp(toks, " Paris")]}}
        rows = [lp(toks[:i + shifted], toks[i + shifted] if i + shifted < len(toks) else "") for i in range(len(toks))]
        return {"text": body["prompt"] + " x", "usage": {"prompt_tokens": len(toks)},
                "logprobs": {"tokens": [*toks, " x"], "token_logprobs": [None, *rows[1:], -1.0]}}

    sent: list[dict] = []
    b = OpenAIBackend(parse_spec("openai:m?base_url=http://127.0.0.1:1/v1"))
    monkeypatch.setattr(b, "_completion", completion)
    for _ in range(2):
        if shifted:
            with pytest.raises(ServerError, match="wrong prompt logprobs"):
                b.continuation_logprobs(b.urls[0], "Q: what? A:", " It is")
        else:
            assert b.continuation_logprobs(b.urls[0], "Q: what? A:", " It is") == ([3, 4], [-7.0, -7.0])
    assert len(sent) == (2 if shifted else 4)  # the probe's two calls, once


def test_a_full_solve_with_the_specreason_judge(server):
    from reasoning.api import Solver

    spec = f"openai:smol?base_url={server}&tokenizer=smollm2-135m"
    sol = Solver(spec, spec, router="specreason", threshold=0.5, max_steps=3, step_tokens=40).solve(QUESTION)
    c = sol.costs
    drafted = sum(1 for st in sol.steps if st.decision is not None)
    assert drafted >= 1 and c.draft.calls == drafted and c.judge.calls == drafted
    escalated = sum(1 for st in sol.steps if st.decision == "escalate")
    assert c.discarded.calls == escalated
    # no answer in 3 steps: the target (loaded by specreason) writes the forced answer step over the server
    last = sol.steps[-1]
    assert (sol.stop_reason, sol.forced_answer, sol.answer_rule) == ("max_steps", True, "forced")
    assert (last.kind, last.author, c.target.calls) == ("forced_answer", "target", escalated + 1)
    assert re.fullmatch(r"-?\d+", sol.answer or "") and last.text == f"The answer is \\boxed{{{sol.answer}}}."


def test_without_a_tokenizer_the_plain_format_and_server_token_counts_are_used(server):
    b = backend(server, tokenizer="")
    assert not b.chat
    s = b.open_session(Prompt.math(QUESTION))
    assert s.n_tokens > 100  # counted by the server's tokenize endpoint
    assert b.count_tokens("Hello world") == 2
    g = s.generate(max_tokens=40, stop=["\n\n"])
    assert g.text


def test_5xx_and_429_are_retried_then_succeed(proxy):
    b = backend(proxy.url)
    s = b.open_session(Prompt.math(QUESTION))
    proxy.plan = [503, 500, 429]
    g = s.generate(max_tokens=4)
    assert len(g.token_ids) == 4 and b.retried == 3


def test_client_errors_are_not_retried(proxy):
    from reasoning.backends.openai import ServerError

    b = backend(proxy.url)
    proxy.plan = [400]
    with pytest.raises(ServerError, match="HTTP 400: planned failure 400"):
        b.open_session(Prompt.math(QUESTION)).generate(max_tokens=4)
    assert b.retried == 0


def test_a_server_that_stays_down_gives_one_error_after_bounded_retries():
    from reasoning.errors import BackendUnavailableError

    b = backend(f"http://127.0.0.1:{free_port()}/v1", retries=2)
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=r"unavailable after 3 tries: .*refused"):
        b.open_session(Prompt.math(QUESTION)).generate(max_tokens=4)
    assert time.perf_counter() - t0 < 5  # backoff 0.25 + 0.5 s


def test_a_slow_server_times_out_and_is_retried(proxy):
    b = backend(proxy.url, timeout=4, retries=1)  # 4 s: a loaded machine still answers the retry in time
    proxy.plan = [("sleep", 8)]
    g = b.open_session(Prompt.math(QUESTION)).generate(max_tokens=3)
    assert len(g.token_ids) == 3 and b.retried == 1


def test_api_key_from_the_environment_is_sent(proxy, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    b = backend(proxy.url, api_key_env="MY_KEY")
    b.open_session(Prompt.math(QUESTION)).generate(max_tokens=2)
    assert proxy.seen[-1].get("Authorization") == "Bearer sk-test-123"


def test_a_url_that_cannot_be_reached_fails_over_to_the_next_and_its_sessions_follow(proxy):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    b = backend(f"{dead}|{proxy.url}", retries="2")
    s = b.open_session(Prompt.math(QUESTION))
    assert s.url == dead and b.live(dead) == dead
    n = len(proxy.bodies)
    g = s.generate(max_tokens=3)
    assert g.usage.output_tokens == 3 and len(proxy.bodies) == n + 1 and b.retried == 1
    assert b.live(dead) == proxy.url and b.open_session(Prompt.math(QUESTION)).url == proxy.url
    s.generate(max_tokens=2)  # the session stays where it went, without trying the dead URL again
    assert len(proxy.bodies) == n + 2 and b.retried == 1


def test_every_request_of_a_session_carries_its_key_for_a_router_to_hash(proxy):
    b = backend(proxy.url)
    one, two = b.open_session(Prompt.math(QUESTION)), b.open_session(Prompt.math(QUESTION))
    n = len(proxy.seen)
    one.generate(max_tokens=2)
    one.next_token_logprobs(["1", "2"])
    two.generate(max_tokens=2)
    fork = one.fork()
    fork.generate(max_tokens=2)
    keys = [h.get("X-Session-ID") for h in proxy.seen[n:]]
    assert keys[0] == keys[1] == keys[3] != keys[2] and all(k and len(k) == 32 for k in keys)
    from reasoning.backends.base import SOLVE_KEY

    token = SOLVE_KEY.set("one-solve")  # within a solve (the controller sets it), its sessions share its key
    try:
        a, b2 = b.open_session(Prompt.math(QUESTION)), b.open_session(Prompt.math(QUESTION))
        a.generate(max_tokens=1)
        b2.generate(max_tokens=1)
    finally:
        SOLVE_KEY.reset(token)
    assert [h.get("X-Session-ID") for h in proxy.seen[-2:]] == ["one-solve", "one-solve"]
    quiet = backend(proxy.url, session_header="")
    quiet.open_session(Prompt.math(QUESTION)).generate(max_tokens=2)
    assert proxy.seen[-1].get("X-Session-ID") is None


@pytest.mark.parametrize("choice, text, expected", [
    ({"finish_reason": "length"}, "a b", ("length", None)),
    ({"finish_reason": "content_filter"}, "a b", ("length", None)),
    ({"finish_reason": "stop", "stop_reason": "\n\n"}, "a b", ("stop", "\n\n")),  # vLLM
    ({"finish_reason": "stop", "stop_reason": None}, "a b", ("eos", None)),
    ({"finish_reason": "stop", "matched_stop": "\n\n"}, "a b", ("stop", "\n\n")),  # SGLang
    ({"finish_reason": "stop", "matched_stop": None}, "a b", ("eos", None)),
    ({"finish_reason": "stop"}, "a b", ("stop", "\n\n")),  # llama-cpp-python's server does not say
    ({"finish_reason": "stop"}, "", ("eos", None)),
])
def test_completions_and_chat_read_why_the_server_stopped_alike(choice, text, expected):
    from reasoning.backends.openai import _finish

    assert _finish(choice, text, ["\n\n", "STOP"]) == expected


def test_bad_specs_are_one_line_errors(monkeypatch):
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.errors import ModelSpecError
    from reasoning.specs import parse_spec

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelSpecError, match="names no server"):
        OpenAIBackend(parse_spec("openai:m"))
    with pytest.raises(ModelSpecError, match="not an http"):
        OpenAIBackend(parse_spec("openai:m?base_url=ftp://x"))
    with pytest.raises(ModelSpecError, match="timeout must be a number"):
        OpenAIBackend(parse_spec("openai:m?base_url=http://127.0.0.1:1/v1&timeout=soon"))
    with pytest.raises(ModelSpecError, match="chat=1 needs"):
        OpenAIBackend(parse_spec("openai:m?base_url=http://127.0.0.1:1/v1&chat=1"))


def test_cli_reports_an_unreachable_server_in_one_line():
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "specstep.cli", "solve", "What is 1+1?", "--router", "draft-only",
                        "--draft", f"openai:m?base_url=http://127.0.0.1:{port}/v1&retries=0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unavailable after 1 tries" in r.stderr


def test_with_a_tokenizer_steps_carry_real_token_ids_and_sessions_catch_up_step_by_step(server):
    """A generation's ids are the served model's tokenizer's encoding of the step (not placeholders), so
    another session of the same vocabulary can take them; llama-cpp-python's server takes text prompts,
    so ids appended there go as their text, step by step."""
    b = backend(server)
    assert b.vocab_key and not b.token_prompts and backend(server, tokenizer="").vocab_key is None
    s = b.open_session(Prompt.math(QUESTION))
    g = s.generate(max_tokens=40, stop=["\n\n"])
    assert g.token_ids == b.encode(g.text) and b.decode(g.token_ids) == g.text
    n = s.n_tokens
    s.append_ids(b.encode("7 - 4 = 3.\n\n"))
    assert s.text == g.text + "7 - 4 = 3.\n\n" and s.n_tokens == n + len(b.encode("7 - 4 = 3.\n\n"))
    with pytest.raises(Exception, match="token_prompts=1 needs"):
        backend(server, tokenizer="", token_prompts="1")


def test_sampling_filters_reach_the_server_and_it_applies_them(server, proxy):
    """top_p goes in the body, top_k and min_p as the extensions the server takes; top_k=1 at temperature 1.5
    writes the greedy text, which the same temperature alone does not."""
    from reasoning.backends.base import Sampling

    b = backend(proxy.url)
    greedy = b.open_session(Prompt.math(QUESTION)).generate(max_tokens=24)
    tops = [b.open_session(Prompt.math(QUESTION)).generate(max_tokens=24, temperature=1.5, seed=s,
                                                              sampling=Sampling(top_p=0.9, top_k=1, min_p=0.05))
            for s in (1, 2)]
    sent = proxy.bodies[-1]
    assert (sent["top_p"], sent["top_k"], sent["min_p"], sent["temperature"]) == (0.9, 1, 0.05, 1.5)
    assert all(t.text == greedy.text for t in tops)
    hot = [b.open_session(Prompt.math(QUESTION)).generate(max_tokens=24, temperature=1.5, seed=s) for s in (1, 2)]
    assert any(h.text != greedy.text for h in hot)
    assert "top_k" not in proxy.bodies[-1] and "top_p" not in proxy.bodies[-1]



def test_k_samples_after_one_prefix_ask_for_n_and_go_one_each_where_the_server_ignores_it(server, proxy):
    """llama-cpp-python's server answers n=3 with one choice: the first request asks for n, the other
    samples follow one request each, seeded s + k as vLLM seeds n samples, and later calls skip n. The
    samples are the ones separate requests with those seeds write; the prefix is counted once."""
    b = backend(proxy.url)
    s = b.open_session(Prompt.math(QUESTION))
    head = s.prefill()
    assert head.input_tokens == s.n_tokens
    kw = dict(max_tokens=12, stop=["\n\n"], temperature=1.0, ignore_eos=False)
    gens = b.generate_many([(s.fork(), kw | {"seed": 40 + k}) for k in range(3)])
    sent = proxy.bodies[-3:]
    assert sent[0]["n"] == 3 and "n" not in sent[1] and "n" not in sent[2]
    assert [x["seed"] for x in sent] == [40, 41, 42]
    alone = [b.open_session(Prompt.math(QUESTION)).generate(seed=40 + k, **kw) for k in range(3)]
    assert [g.text for g in gens] == [a.text for a in alone] and len({g.text for g in gens}) > 1
    assert [g.usage.input_tokens for g in gens] == [0, 0, 0]  # the prefix was counted by prefill()
    assert s.text == "" and s.n_tokens == head.input_tokens  # the forks wrote, not the session
    n0 = len(proxy.bodies)
    b.generate_many([(s.fork(), kw | {"seed": 7 + k}) for k in range(2)])
    assert len(proxy.bodies) == n0 + 2 and all("n" not in x for x in proxy.bodies[n0:])
    # seeds that do not count up, or greedy steps, are separate requests
    n0 = len(proxy.bodies)
    b2 = backend(proxy.url)
    b2.generate_many([(b2.open_session(Prompt.math(QUESTION)), kw | {"seed": sd}) for sd in (3, 9)])
    assert len(proxy.bodies) == n0 + 2 and all("n" not in x for x in proxy.bodies[n0:])
