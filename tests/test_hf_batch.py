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
    assert len({round(g.usage.seconds, 9) for g in got}) == 1  # each waited for the whole batch
    # each session got its own KV back without the padding: the next steps go on exactly as alone
    for a, b in zip(alone, batched):
        for s in (a, b):
            s.append(" So")
        assert b.generate(max_tokens=4).token_ids == a.generate(max_tokens=4).token_ids
        mark = a.n_prompt + 1
        a.rollback(mark)
        b.rollback(mark)
        assert b.generate(max_tokens=3).token_ids == a.generate(max_tokens=3).token_ids


def test_generate_goes_through_the_lockstep_scheduler_and_batches_threads(smol, monkeypatch):
    import reasoning.batching as batching

    lock = Lockstep(max_wait=5.0)
    monkeypatch.setattr(batching, "LOCKSTEP", lock)
    sessions = _sessions(smol, 3)
    want = [s.generate(max_tokens=12).token_ids for s in _sessions(smol, 3)]
    assert lock.batches == 3  # not workers: each call ran at once, alone
    got: list = [None] * 3

    def work(i):
        with lock.worker(reserved=True):
            got[i] = sessions[i].generate(max_tokens=12).token_ids

    lock.reserve(3)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    assert (lock.batches, lock.batched_requests) == (4, 6)  # the three workers' calls in one batch


@pytest.mark.slow
def test_solve_many_batches_transformers_solves_and_gives_the_one_by_one_records(smol):
    from reasoning import Solver
    from reasoning.batching import LOCKSTEP

    solver = Solver("smollm2-135m", "smollm2-135m", "random", 0.5, max_steps=2, step_tokens=16, few_shot=0)
    questions = QUESTIONS + ["What is 9 + 10?"]
    one = [solver.solve(q) for q in questions]
    before = (LOCKSTEP.batches, LOCKSTEP.batched_requests)
    many = solver.solve_many(questions, batch_size=4)
    batches, requests = LOCKSTEP.batches - before[0], LOCKSTEP.batched_requests - before[1]
    assert requests > batches  # some engine calls ran together
    for a, b in zip(one, many):
        assert [(s.text, s.tokens, s.author) for s in a.steps] == [(s.text, s.tokens, s.author) for s in b.steps]
        assert a.answer == b.answer


def test_lockstep_0_keeps_generations_apart(smol):
    from reasoning.backends import load_backend

    b = load_backend("smollm2-135m?lockstep=0")
    assert b.lockstep is False and smol.lockstep is True
