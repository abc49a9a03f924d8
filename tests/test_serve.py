"""`specstep serve`: the real server on 127.0.0.1, real models, the official openai client."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from reasoning.errors import ConfigError
from reasoning.types import Step
from specstep.serve import make_server

from .conftest import QUESTION

SMALL = {"max_steps": 3, "step_tokens": 32, "max_tokens": 96}
Q2 = "Tom has 3 boxes of 4 apples and eats 2. How many are left?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def running(solver, **kw):
    server = make_server(solver, "127.0.0.1", 0, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def client_for(server, key="unused"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)


def ask(client, question, **kw):
    return client.chat.completions.create(model="specstep", messages=[{"role": "user", "content": question}], **kw)


def http(url, body=None, method="POST", headers=None):
    """(status, headers, JSON body) of one raw request."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def check_usage(usage, spec):
    """The invariant: usage sums the stages' input (prompt) and sampled (completion) tokens."""
    stages = [spec["usage"][s] for s in ("draft", "judge", "router", "target")]
    assert usage.prompt_tokens == sum(s["input_tokens"] for s in stages) > 0
    assert usage.completion_tokens == sum(s["output_tokens"] for s in stages) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < spec["solution_tokens"] <= usage.completion_tokens
    assert sum(spec["steps_by_author"].values()) == spec["steps"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As tests/test_collect.py: on a shared 2-core machine two torch threads spin against other
    work and run many times slower; one is about as fast on a quiet machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def solver():
    from reasoning.api import Solver

    return Solver("smollm2-135m", router="draft-only", **SMALL)


@pytest.fixture(scope="module")
def server(solver):
    with running(solver) as s:
        yield s


class _NoSolve:
    """A solver for the tests that never reach a solve (validation, routing, keys): no model loads."""

    limits = None

    def solve(self, problem, on_step=None, **limits):
        raise AssertionError(f"a request that should have been refused was solved: {problem.question!r}")


@pytest.fixture(scope="module")
def no_solve_server():
    with running(_NoSolve()) as s:
        yield s


@pytest.fixture(scope="module")
def completion(server):
    return ask(client_for(server), QUESTION)


def test_models_list_and_retrieve(no_solve_server):
    client = client_for(no_solve_server)
    assert [m.id for m in client.models.list()] == ["specstep"]
    assert client.models.retrieve("specstep").owned_by == "specstep"


@pytest.mark.slow
def test_completion_has_the_solution_usage_and_the_specstep_field(completion):
    r = completion
    assert r.object == "chat.completion" and r.model == "specstep" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    spec = r.model_extra["specstep"]
    assert set(spec["usage"]) == {"draft", "judge", "router", "target", "discarded"}
    assert set(spec["usage"]["draft"]) == {"calls", "input_tokens", "output_tokens", "seconds", "flops"}
    assert 1 <= spec["steps"] <= SMALL["max_steps"] + 1 and spec["router"] == "draft-only"
    assert choice.finish_reason == ("length" if spec["stop_reason"] in ("max_steps", "token_budget") else "stop")
    assert spec["answer"] is not None and spec["answer"] in choice.message.content
    # draft-only: every step is the draft's, none escalated; the target never ran
    assert spec["steps_by_author"]["target"] == 0 and spec["usage"]["target"]["calls"] == 0
    assert spec["acceptance"] == {"steps": 1.0, "tokens": 1.0} and spec["escalation_rate"] == 0.0
    check_usage(r.usage, spec)


@pytest.mark.slow
def test_streaming_sends_each_step_as_it_is_accepted(solver, completion):
    # One slot: a second request while the stream runs gets 429.
    with running(solver, max_concurrency=1) as server:
        client = client_for(server)
        stream = ask(client, QUESTION, stream=True, stream_options={"include_usage": True})
        chunks, arrived = [], []
        for chunk in stream:
            chunks.append(chunk)
            arrived.append(time.perf_counter())
            if len(chunks) == 2:  # the first step is out, the solve goes on
                with pytest.raises(openai.RateLimitError, match="busy"):
                    ask(client, Q2)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1
    at = [i for i in range(1, finish[0]) if chunks[i].choices[0].delta.content]
    steps = [chunks[i] for i in at]
    spec = chunks[finish[0]].model_extra["specstep"]
    assert len(steps) == spec["steps"] >= 2
    assert "".join(c.choices[0].delta.content for c in steps) == completion.choices[0].message.content
    assert [c.model_extra["specstep_step"]["index"] for c in steps] == list(range(spec["steps"]))
    # the first step arrived while later steps were still being written
    later = sum(c.model_extra["specstep_step"]["seconds"] for c in steps[1:])
    assert arrived[finish[0]] - arrived[at[0]] > 0.5 * later > 0
    assert chunks[finish[0]].choices[0].finish_reason == completion.choices[0].finish_reason
    want = completion.model_extra["specstep"]
    for key in ("answer", "stop_reason", "steps", "solution_tokens", "acceptance", "steps_by_author"):
        assert spec[key] == want[key]
    last = chunks[-1]
    assert last.choices == [] and last.usage == completion.usage
    check_usage(last.usage, spec)


@pytest.mark.slow
def test_concurrent_requests_give_the_sequential_answers(server, completion):
    client = client_for(server)
    alone = ask(client, Q2).choices[0].message.content
    # The last user message is the question; system and earlier messages are ignored.
    chat = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    results = {}

    def one(name, messages):
        results[name] = client.chat.completions.create(model="specstep", messages=messages)

    threads = [threading.Thread(target=one, args=("q1", chat)),
               threading.Thread(target=one, args=("q2", [{"role": "user", "content": Q2}]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["q1"].choices[0].message.content == completion.choices[0].message.content
    assert results["q2"].choices[0].message.content == alone


# every policy at a threshold where it keeps some steps and escalates others (tests/test_loop.py)
POLICIES = {"random": (0.8, {}), "specreason": (0.75, {}), "arbitrage": (0.5, {"model": "testbed"}),
            "first-token": (0.01, {}), "oracle": (0.0, {}), "handoff": (0.5, {}),
            "cascade": (0.9, {"gate": "logprob", "arbitrage": "testbed", "confident": "-0.02"}),
            "best-of-n": (0.75, {"n": "2"}),
            "lookahead/score": (0.5, {"k": "2", "verify": "score"}),  # keeps both drafted steps: one from its plan
            "lookahead": (None, {"k": "2"})}  # the target's steps from forked sessions, its verdicts


def outcome(response):
    """A response's record without its seconds: text, answer, authors, and each stage's calls and tokens."""
    spec = response.model_extra["specstep"]
    usage = {stage: (u["calls"], u["input_tokens"], u["output_tokens"]) for stage, u in spec["usage"].items()
             if isinstance(u, dict)}
    return response.choices[0].message.content, spec["answer"], spec["steps_by_author"], usage


@pytest.mark.slow
@pytest.mark.parametrize("policy", list(POLICIES))
def test_concurrent_requests_with_one_question_give_the_sequential_records(policy):
    """Two requests with the same question at once get what one request alone gets: per-solve state
    (lookahead's plans, best-of-n's candidates, handoff's prefixes, cascade's gates) is per solve."""
    from eval.synthetic import generate
    from reasoning.api import Solver

    tau, options = POLICIES[policy]
    question = generate(7, steps=3, seed=0, split="test")[6].question
    solver = Solver("testbed-draft", "testbed-target", router=policy.split("/")[0], threshold=tau,
                    router_options=options, max_steps=2, step_tokens=48, max_tokens=128)
    with running(solver) as server:
        client = client_for(server)
        alone = outcome(ask(client, question))
        results = {}

        def one(k):
            results[k] = outcome(ask(client, question))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert results == {0: alone, 1: alone}


def test_bearer_token():
    solver = _NoSolve()
    with running(solver, api_key="s3cret") as server:
        assert [m.id for m in client_for(server, "s3cret").models.list()] == ["specstep"]
        with pytest.raises(openai.AuthenticationError, match="API key"):
            client_for(server, "wrong").models.list()
        with pytest.raises(openai.AuthenticationError):
            ask(client_for(server, "s3cre"), QUESTION)
        status, headers, body = http(server.url + "/v1/chat/completions", {"messages": []})
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert body["error"]["code"] == "invalid_api_key"
        status, _, _ = http(server.url + "/v1/models", method="GET", headers={"Authorization": "Basic s3cret"})
        assert status == 401
    with pytest.raises(ConfigError, match="API key is empty"):
        make_server(solver, api_key=" ")


@pytest.mark.slow
def test_specreason_runs_the_target_and_reports_each_step():
    from reasoning.api import Solver

    pair = Solver("smollm2-135m", "gemma3-270m", router="specreason", threshold=0.5, **SMALL)
    with running(pair) as server:
        chunks = list(ask(client_for(server), QUESTION, stream=True, stream_options={"include_usage": True},
                          max_tokens=40))
    steps = [c.model_extra["specstep_step"] for c in chunks if c.choices and c.choices[0].delta.content]
    spec = next(c.model_extra["specstep"] for c in chunks if c.choices and c.choices[0].finish_reason)
    assert len(steps) == spec["steps"] and spec["router"] == "specreason" and spec["threshold"] == 0.5
    assert sum(s["tokens"] for s in steps if s["kind"] != "forced_answer") <= 40  # the request's budget
    drafted = [s for s in steps if s["decision"] is not None]
    assert drafted and all(s["score"] is not None for s in drafted)
    escalated = sum(s["decision"] == "escalate" for s in drafted)
    assert spec["escalation_rate"] == pytest.approx(escalated / len(drafted))
    assert spec["acceptance"]["steps"] == pytest.approx(1 - escalated / len(drafted))
    assert all(s["author"] == ("target" if s["decision"] == "escalate" else s["author"]) for s in steps)
    u = spec["usage"]
    assert u["judge"]["calls"] == len(drafted) and u["target"]["calls"] >= escalated
    assert (u["discarded"]["output_tokens"] > 0) == (escalated > 0)
    assert spec["steps_by_author"]["target"] >= escalated
    check_usage(chunks[-1].usage, spec)


USER = {"role": "user", "content": "What is 2 + 3?"}


def test_a_requests_sampling_settings_reach_the_solve():
    from specstep.serve import ChatRequest, request_limits

    req = ChatRequest(messages=[USER], temperature=0.7, top_p=0.95, top_k=20, min_p=0.05, seed=3)
    assert request_limits(None, req) == {"temperature": 0.7, "top_p": 0.95, "top_k": 20, "min_p": 0.05, "seed": 3}


@pytest.mark.parametrize("body,status,msg", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"messages": [{"role": "user", "content": "2+3?"}], "temperature": NaN}', 400, "NaN"),
    ([1, 2], 400, "must be a JSON object"),
    ({"messages": [USER], "frobnicate": 1}, 400, "unknown field 'frobnicate'"),
    ({"messages": [{**USER, "foo": 1}]}, 400, "unknown field 'messages.0.foo'"),
    ({}, 400, "missing field 'messages'"),
    ({"messages": []}, 400, "'messages'"),
    ({"messages": [{"role": "system", "content": "Be brief."}]}, 400, "no user message"),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "the last user message is empty"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "'messages.0.role'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "only text content parts are supported, got 'image_url'"),
    ({"messages": [{"role": "user", "content": "x" * 40_000}]}, 400, "the question is too long"),
    ({"messages": [USER], "temperature": "hot"}, 400, "'temperature'"),
    ({"messages": [USER], "temperature": 3}, 400, "'temperature'"),
    ({"messages": [USER], "max_tokens": 1.5}, 400, "'max_tokens'"),
    ({"messages": [USER], "max_tokens": 0}, 400, "'max_tokens'"),
    ({"messages": [USER], "max_tokens": 8, "max_completion_tokens": 8}, 400, "not both"),
    ({"messages": [USER], "seed": -1}, 400, "'seed'"),
    ({"messages": [USER], "stream": "yes"}, 400, "'stream'"),
    ({"messages": [USER], "stream_options": {"include_usage": True}}, 400, "stream_options is only allowed"),
    ({"messages": [USER], "n": 2}, 400, "'n'"),
    ({"messages": [USER], "top_p": 0}, 400, "'top_p'"),
    ({"messages": [USER], "top_k": -1}, 400, "'top_k'"),
    ({"messages": [USER], "min_p": 1.5}, 400, "'min_p'"),
    ({"messages": [USER], "stop": ["\n"]}, 400, "stop sequences are not supported"),
    ({"messages": [USER], "model": "gpt-4o"}, 404, "model 'gpt-4o' does not exist"),
    (b'{"messages": [' + b" " * (1 << 20) + b"]}", 413, "too large"),
])
def test_bad_requests_get_openai_style_errors(no_solve_server, body, status, msg):
    got, _, err = http(no_solve_server.url + "/v1/chat/completions", body)
    assert got == status, err
    assert err["error"]["type"] == "invalid_request_error" and msg in err["error"]["message"], err


@pytest.mark.parametrize("method,path,status,msg", [
    ("GET", "/v1/nope", 404, "unknown path '/v1/nope'"),
    ("POST", "/v1/completions", 404, "unknown path '/v1/completions'"),
    ("GET", "/v1/models/gpt-4o", 404, "model 'gpt-4o' does not exist"),
    ("GET", "/v1/chat/completions", 405, "method GET is not allowed"),
    ("POST", "/v1/models", 405, "method POST is not allowed"),
    ("DELETE", "/v1/models", 405, "method DELETE is not allowed"),
])
def test_wrong_path_or_method(no_solve_server, method, path, status, msg):
    body = {"messages": [USER]} if method == "POST" else None
    got, headers, err = http(no_solve_server.url + path, body, method=method)
    assert got == status and msg in err["error"]["message"], err
    if status == 405:
        assert headers["Allow"] == ("POST" if path.endswith("completions") else "GET")


class _Failing:
    """Fault injection: a solver that fails, after one real step when asked to."""

    def solve(self, problem, on_step=None, **limits):
        if "mid" in problem.question:
            on_step(Step(index=0, text="A first step.", author="draft", tokens=4))
        raise RuntimeError("the backend fell over")


def test_a_failed_solve_gives_500_and_the_server_keeps_serving():
    with running(_Failing()) as server:
        client = client_for(server)
        with pytest.raises(openai.InternalServerError, match="the backend fell over"):
            ask(client, "2 + 3?")
        with pytest.raises(openai.InternalServerError):  # before the first step: still a status
            list(ask(client, "2 + 3?", stream=True))
        got = []
        with pytest.raises(openai.APIError, match="the backend fell over"):  # mid-stream: an error event
            for chunk in ask(client, "mid 2 + 3?", stream=True):
                got.append(chunk)
        assert "".join(c.choices[0].delta.content or "" for c in got) == "A first step."
        assert [m.id for m in client.models.list()] == ["specstep"]


@pytest.mark.parametrize("args,msg", [
    (["--threshold", "abc"], "threshold must be a number, got 'abc'"),
    (["--router", "nope"], "unknown router 'nope'"),
    (["--router", "random", "--threshold", "2"], "threshold 2.0 is out of range"),
    (["--port", "70000"], "--port must be 0-65535"),
    (["--api-key-env", "SPECSTEP_TEST_NO_SUCH_VAR"], "SPECSTEP_TEST_NO_SUCH_VAR is not set"),
    (["--api-key", "a", "--api-key-env", "B"], "not allowed with argument"),
])
def test_cli_bad_arguments_give_one_line_and_exit_code_2(cli, args, msg):
    r = cli("serve", "--port", "0", *args)
    assert r.returncode == 2, r.stderr
    assert msg in r.error_line()


@pytest.mark.slow
def test_cli_serves_until_interrupted():
    env = {**ENV, "SPECSTEP_TEST_KEY": "k3y"}
    proc = subprocess.Popen([sys.executable, "-m", "specstep.cli", "serve", "--port", "0", "--router",
                             "draft-only", "--api-key-env", "SPECSTEP_TEST_KEY", "--model-name", "pair"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert url, (line, proc.stderr.read() if proc.poll() is not None else "")
        status, _, body = http(url.group(0) + "/models", method="GET", headers={"Authorization": "Bearer k3y"})
        assert status == 200 and [m["id"] for m in body["data"]] == ["pair"]
        assert http(url.group(0) + "/models", method="GET")[0] == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("stop, finish", [("answer", "stop"), ("eos", "stop"), ("repeated_step", "stop"),
                                          ("max_steps", "length"), ("token_budget", "length"),
                                          ("no_answer", "length")])
def test_a_solves_stop_reason_maps_to_openais_finish_reason(stop, finish):
    from reasoning.types import Problem, Solution, SolveConfig
    from specstep.serve import finish_reason_of

    config = SolveConfig(draft="d", target="t", router="r", max_steps=1, max_tokens=1, step_tokens=1, delimiter="\n\n",
                         temperature=0.0)
    assert finish_reason_of(Solution(problem=Problem(question="q"), stop_reason=stop, config=config)) == finish
