"""Batched decoding on the transformers engine: sessions generating side by side in one decode loop give
what each gives alone, leave each session exactly as a lone generation would, and `solve_many` uses it."""

import threading

import pytest

from reasoning.backends.hf_batch import generate_batch
from reasoning.batching import Lockstep
from reasoning.prompts import Prompt

from .conftest import QUESTION

QUESTIONS = [QUESTION, "What is 17 * 4 + 7?", "A train travels 60 km in 1 hour. How far does it go in 3 hours?"]
ASKS = [  # different lengths, stops and ends, so that rows leave the batch at different steps
    dict(max_tokens=14, stop=("\n\n",)),
    dict(max_tokens=1),
    dict(max_tokens=10, stop=(" ",)),  # a stop string that may end inside a token
    dict(max_tokens=8, temperature=1.0, seed=3),
]


def _sessions(backend, n=4):
    # prompts of different lengths: the batch pads them on the left
    return [backend.open_session(Prompt.math(QUESTIONS[i % 3], few_shot=0)) for i in range(n)]


@pytest.mark.parametrize("name", ["smol", pytest.param("gemma", marks=pytest.mark.slow)])  # gemma: sliding windows
def test_a_batch_gives_what_each_session_gives_alone_and_leaves_it_as_alone(name, request):
    backend = request.getfixturevalue(name)
    alone, batched = _sessions(backend), _sessions(backend)
    want = [s.generate(**kw) for s, kw in zip(alone, ASKS)]
    got = generate_batch(backend, list(zip(batched, ASKS)))
    for w, g, a, b in zip(want, got, alone, batched):
        assert g.token_ids == w.token_ids and g.text == w.text
        assert (g.finish_reason, g.stop) == (w.finish_reason, w.stop)
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-3)
        assert (g.usage.input_tokens, g.usage.output_tokens) == (w.usage.input_tokens, w.usage.output_tokens)
        assert b.token_ids == a.token_ids
    # each is charged the seconds from its start to its end in the batch, its own catch-up as prefill
    assert all(0 < g.usage.prefill_seconds < g.usage.seconds for g in got)
    assert got[1].usage.seconds < got[0].usage.seconds  # one token: it left the batch first
    # each session got its own KV back without the padding: the next steps go on exactly as alone
    for a, b in zip(alone, batched):
        for s in (a, b):
            s.append(" So")
        assert b.generate(max_tokens=4).token_ids == a.generate(max_tokens=4).token_ids
        mark = a.n_prompt + 1
        a.rollback(mark)
        b.rollback(mark)
        assert b.generate(max_tokens=3).token_ids == a.generate(max_tokens=3).token_ids


def test_forks_share_the_prefix_and_continue_as_the_session_alone_would(smol):
    """`fork` copies a session's ids and KV: forks written side by side (`generate_many`) give what the session
    gives continuing alone after each text, run only what follows the prefix, and leave the session as it was."""
    parent = smol.open_session(Prompt.math(QUESTION, few_shot=0))
    head = parent.prefill()
    assert head.input_tokens == parent.n_tokens and parent.prefill().input_tokens == 0  # run once
    before = (parent.token_ids, parent._kv_len)
    tails = ["", " First,", " Let x be"]
    forks = [parent.fork() for _ in tails]
    for f, tail in zip(forks, tails):
        f.append(tail)
    got = smol.generate_many([(f, dict(max_tokens=6)) for f in forks])
    assert (parent.token_ids, parent._kv_len) == before
    for tail, g in zip(tails, got):
        alone = smol.open_session(Prompt.math(QUESTION, few_shot=0))
        alone.append(tail)
        want = alone.generate(max_tokens=6)
        assert g.token_ids == want.token_ids
        assert g.usage.input_tokens == len(smol.encode(tail)) if tail else g.usage.input_tokens == 0
    assert parent.generate(max_tokens=6).token_ids == got[0].token_ids  # the parent's own KV is intact


def test_solves_side_by_side_share_decode_steps_and_get_what_alone_gives(smol, monkeypatch):
    import reasoning.batching as batching

    lock = Lockstep()
    monkeypatch.setattr(batching, "LOCKSTEP", lock)
    asks = [dict(max_tokens=n, stop=("\n\n",)) for n in (12, 4, 8)]
    loop = smol.decoder
    before = (loop.forwards, loop.row_steps)
    want = [s.generate(**kw).token_ids for s, kw in zip(_sessions(smol, 3), asks)]
    assert (loop.forwards, loop.row_steps) == before  # not workers: each call ran alone, in its own thread
    sessions = _sessions(smol, 3)
    got: list = [None] * 3

    def work(i):
        with lock.worker(reserved=True):
            got[i] = [sessions[i].generate(**asks[i]).token_ids]
            # joins the running batch one token behind (the last it sampled): that token runs in the batch
            second = sessions[i].generate(max_tokens=3)
            got[i] += [second.token_ids, (second.usage.input_tokens, second.usage.prefill_seconds)]

    lock.reserve(3)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [g[0] for g in got] == want
    assert all(g[2] == (1, 0.0) for g in got)  # one token read, in the batch's step: no forward of its own
    for s, ask, g in zip(_sessions(smol, 3), asks, got):  # the second generations as a lone session gives them
        s.generate(**ask)
        assert s.generate(max_tokens=3).token_ids == g[1]
    assert loop.row_steps - before[1] > loop.forwards - before[0] > 0  # rows shared forward passes
    assert loop.load() == 0 and smol.load() == 0


def test_a_generation_that_fails_in_the_batch_fails_alone(smol, monkeypatch):
    import reasoning.batching as batching

    lock = Lockstep()
    monkeypatch.setattr(batching, "LOCKSTEP", lock)
    good, bad = _sessions(smol, 2)
    want = good.generate(max_tokens=6).token_ids
    good.rollback(good.n_prompt)

    def broken():
        raise ValueError("boom")

    bad._next_logits = broken  # forces the error path: this session cannot catch up
    got: dict = {}

    def work(name, s):
        with lock.worker(reserved=True):
            try:
                got[name] = s.generate(max_tokens=6).token_ids
            except ValueError as e:
                got[name] = str(e)

    lock.reserve(2)
    threads = [threading.Thread(target=work, args=a) for a in (("good", good), ("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == {"good": want, "bad": "boom"}
    assert smol.decoder.load() == 0


@pytest.mark.slow
def test_solve_many_batches_transformers_solves_and_gives_the_one_by_one_records(smol):
    from reasoning import Solver

    solver = Solver("smollm2-135m", "smollm2-135m", "random", 0.5, max_steps=2, step_tokens=16, few_shot=0)
    questions = QUESTIONS + ["What is 9 + 10?"]
    one = [solver.solve(q) for q in questions]
    loop = solver.solve_many(questions[:1], batch_size=1) and smol.decoder
    before = (loop.forwards, loop.row_steps)
    many = solver.solve_many(questions, batch_size=4)
    assert loop.row_steps - before[1] > loop.forwards - before[0]  # decode steps were shared
    for a, b in zip(one, many):
        assert [(s.text, s.tokens, s.author) for s in a.steps] == [(s.text, s.tokens, s.author) for s in b.steps]
        assert a.answer == b.answer


def test_lockstep_0_keeps_generations_apart(smol):
    from reasoning.backends import load_backend

    b = load_backend("smollm2-135m?lockstep=0")
    assert b.lockstep is False and smol.lockstep is True


def test_sampling_filters_keep_what_they_promise():
    """top_k keeps the k likeliest, top_p the smallest head whose mass reaches it, min_p the tokens at least
    that share of the likeliest's probability; each keeps the likeliest token."""
    import math

    import torch

    from reasoning.backends.base import Sampling
    from reasoning.backends.kv import filtered

    z = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    kept = lambda f: [i for i, v in enumerate(filtered(z, f).tolist()) if v > -math.inf]  # noqa: E731
    assert kept(Sampling(top_k=2)) == [0, 1] and kept(Sampling(top_k=9)) == [0, 1, 2, 3]
    assert kept(Sampling(top_p=0.5)) == [0] and kept(Sampling(top_p=0.6)) == [0, 1] and kept(Sampling(top_p=0.9)) \
        == [0, 1, 2]
    assert kept(Sampling(min_p=0.3)) == [0, 1, 2] and kept(Sampling(min_p=1.0)) == [0]
    assert kept(Sampling(top_k=3, min_p=0.4)) == [0, 1]
    with pytest.raises(ValueError, match="out of range"):
        Sampling(top_p=0.0)


def test_sampling_filters_apply_alone_and_in_a_batch(smol):
    """At a high temperature, top_k=1 (or min_p=1, or a tiny top_p) writes the greedy text, alone and in a batch;
    without a filter the same seeds do not."""
    from reasoning.backends.base import Sampling

    def session():
        return smol.open_session(Prompt.math(QUESTION, few_shot=0))

    greedy = session().generate(max_tokens=16).token_ids
    filters = [Sampling(top_k=1), Sampling(min_p=1.0), Sampling(top_p=1e-6)]
    for f in filters:
        assert session().generate(max_tokens=16, temperature=2.0, seed=5, sampling=f).token_ids == greedy
    batched = generate_batch(smol, [(session(), dict(max_tokens=16, temperature=2.0, seed=5, sampling=f))
                                    for f in filters])
    assert all(g.token_ids == greedy for g in batched)
    hot = [session().generate(max_tokens=16, temperature=2.0, seed=s).token_ids for s in (5, 6)]
    assert any(h != greedy for h in hot)

