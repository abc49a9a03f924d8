"""llama.cpp's own server (llama-server: parallel slots, token-array prompts, n samples, /health) on 127.0.0.1,
alone and as a pool of two replicas behind vLLM's router (vllm-router, consistent hashing on the session key)."""

import json
import threading
import time

import pytest

from reasoning.prompts import Prompt

from .conftest import QUESTION
from .servers import Proxy, side_by_side, start_llamacpp_server, start_vllm_router

pytestmark = pytest.mark.slow


def smol_gguf():
    from reasoning.backends.llamacpp import gguf_path
    from reasoning.specs import parse_spec

    return gguf_path(parse_spec("llamacpp:smollm2-135m"))


def spec(base: str, **opts: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"base_url": base, "tokenizer": "smollm2-135m", "token_prompts": "1",
                                               **opts}.items())
    return f"openai:smol?{query}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, base = start_llamacpp_server(smol_gguf(), "smol", tmp_path_factory.mktemp("llama-server") / "server.log")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_token_prompts_logprobs_and_n_samples_on_llama_server(server):
    """llama-server takes token arrays and answers with logprobs in the chat form; K samples after one
    prefix are one request for n = K; a session holding token ids rolls back into the middle of a step."""
    from reasoning.backends.openai import OpenAIBackend
    from reasoning.specs import parse_spec

    b = OpenAIBackend(parse_spec(spec(server)))
    s = b.open_session(Prompt.math(QUESTION))
    g = s.generate(max_tokens=40, stop=["\n\n"])
    assert g.finish_reason == "stop" and g.text.endswith("\n\n") and len(g.logprobs) == len(g.entropies) > 0
    assert all(lp <= 0 for lp in g.logprobs) and any(e > 0 for e in g.entropies)
    assert s.token_ids == s.prompt_ids + b.encode(g.text)
    top, _ = s.next_token_logprobs([str(d) for d in range(10)])
    assert len(top) == 10 and all(v <= 0 for v in top.values())
    # a rollback to a length inside the step cuts it at a token (the pieces carry ids)
    mark = s.n_tokens - len(g.token_ids)
    s.rollback(mark + 2)
    assert s.token_ids == s.prompt_ids + g.token_ids[:2] and s.text == b.decode(g.token_ids[:2])
    s.rollback(mark)

    sent = []
    choices = b._choices
    b._choices = lambda url, body, extra=None: sent.append(body) or choices(url, body, extra)
    s.prefill()
    kw = dict(max_tokens=12, stop=["\n\n"], temperature=1.0, ignore_eos=False)
    gens = b.generate_many([(s.fork(), kw | {"seed": 40 + k}) for k in range(3)])
    assert len(sent) == 1 and sent[0]["n"] == 3 and len({g.text for g in gens}) > 1
    assert all(g.token_ids == b.encode(g.text) and g.logprobs for g in gens)

    # steps after three different prefixes (lookahead's) go out side by side, for the server's slots to batch
    together = side_by_side(b, 3)
    forks = []
    for step in ("35 / 7 = 5.\n\n", "35 * 7 = 245.\n\n", "35 + 7 = 42.\n\n"):
        forks.append(f := s.fork())
        f.append(step)
    greedy = dict(max_tokens=12, stop=["\n\n"], temperature=0.0, ignore_eos=False)
    gens = b.generate_many([(f, greedy) for f in forks])
    assert together.n_waiting == 0 and not together.broken
    assert [f.token_ids[-len(g.token_ids):] for f, g in zip(forks, gens)] == [g.token_ids for g in gens]
    assert all(g.token_ids and g.logprobs for g in gens)


@pytest.fixture()
def pool(tmp_path):
    """Two llama-servers, each behind a recording proxy, behind vllm-router's consistent hashing."""
    procs, proxies = [], []
    try:
        for i in range(2):
            proc, url = start_llamacpp_server(smol_gguf(), "smol", tmp_path / f"server{i}.log")
            procs.append(proc)
            proxies.append(Proxy(url))
        router, base = start_vllm_router([p.url.removesuffix("/v1") for p in proxies], tmp_path / "router.log")
        procs.append(router)
        yield procs[:2], proxies, base
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
        for p in proxies:
            p.close()


def test_eval_through_a_router_over_two_servers_loses_nothing_when_one_dies(pool, tmp_path):
    """eval at concurrency 4 through vllm-router over two replicas: each solve's requests stay on one replica
    (the solve's key), and when one replica is killed under a request its solve goes on on the other:
    every record is written once."""
    from eval.latency import read_profile
    from eval.records import read_records
    from eval.sweep import SweepConfig, run_sweep

    procs, proxies, base = pool
    model = spec(base, retries="8")
    profile = read_profile("testbed-cpu").model_copy(update={"draft": model, "target": model})
    (tmp_path / "profile.json").write_text(profile.model_dump_json())
    cfg = SweepConfig(dataset="synthetic", limit=6, draft=model, target=model, policies=["draft-only", "specreason"],
                      thresholds=[0.5], concurrency=4, latency_profile=str(tmp_path / "profile.json"),
                      limits={"max_steps": 6, "max_tokens": 192})
    out = tmp_path / "run"
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(records=run_sweep(cfg, out, progress=False)))
    worker.start()
    records = out / "records.jsonl"
    deadline = time.time() + 300
    while worker.is_alive() and time.time() < deadline and (
            not records.exists() or not records.read_text().strip()):
        time.sleep(0.2)
    # until both replicas have served a solve (the keys are random: a few solves can all hash to one)
    def sessions(p):
        return {h.get("X-Session-ID") for h in p.seen if h.get("X-Session-ID")}

    while worker.is_alive() and time.time() < deadline and not all(sessions(p) for p in proxies):
        time.sleep(0.05)
    # the next request to either replica waits in its proxy; that replica is killed under it
    n = [len(p.bodies) for p in proxies]
    for p in proxies:
        p.plan = [("sleep", 3.0)]
    while worker.is_alive() and time.time() < deadline and [len(p.bodies) for p in proxies] == n:
        time.sleep(0.05)
    victim = 0 if len(proxies[0].bodies) > n[0] else 1
    survivor = 1 - victim
    proxies[survivor].plan = []
    caught = next(h.get("X-Session-ID") for h in reversed(proxies[victim].seen) if h.get("X-Session-ID"))
    before = [len(p.seen) for p in proxies]
    procs[victim].kill()
    worker.join(timeout=600)
    assert not worker.is_alive() and "records" in result

    lines = [json.loads(x) for x in records.read_text().splitlines()]
    keys = [x["key"] for x in lines]
    assert len(keys) == len(set(keys)) == 12 and len(result["records"]) == 12
    assert all(x["answer"] is not None or x["steps"] > 0 for x in lines)
    assert len(read_records(records)) == 12
    # before the kill: every session key reached one replica only, and both replicas served
    where: dict[str, set[int]] = {}
    for i, p in enumerate(proxies):
        for h in p.seen[: before[i]]:
            if h.get("X-Session-ID"):
                where.setdefault(h["X-Session-ID"], set()).add(i)
    log = (tmp_path / "router.log").read_text()[-3000:]
    assert where and all(len(v) == 1 for v in where.values()), (where, log)
    assert {i for v in where.values() for i in v} == {0, 1}, (where, log)
    # the solve whose request was under way on the killed replica went on on the survivor
    assert caught in {h.get("X-Session-ID") for h in proxies[survivor].seen[before[survivor]:]}, (caught, where, log)
