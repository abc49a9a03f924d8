"""Load-aware routing and lockstep batching, with the real bundled models."""

import threading

import pytest

from reasoning import ConfigError, Solver
from reasoning.batching import Lockstep
from routers import make_router

from .conftest import QUESTION


@pytest.mark.slow
def test_escalations_are_shed_while_the_target_is_busy(smol, gemma):
    solver = Solver("smollm2-135m", "gemma3-270m", router="random", threshold=1.0,
                    router_options={"load_slope": 1.0}, max_steps=2, step_tokens=24, force_answer=False)
    idle = solver.solve(QUESTION)
    assert [s.decision for s in idle.steps] == ["escalate"] * len(idle.steps)
    assert all(s.threshold == 1.0 and s.target_load == 0 for s in idle.steps)

    done = threading.Event()
    result = {}

    def solve_while_busy():
        result["sol"] = solver.solve(QUESTION)
        done.set()

    with gemma.turns.turn():  # another session is running on the target
        t = threading.Thread(target=solve_while_busy)
        t.start()
        assert done.wait(120), "the solve waited for the busy target instead of keeping the draft's steps"
    t.join()
    busy = result["sol"]
    assert [s.decision for s in busy.steps] == ["keep"] * len(busy.steps)
    assert all(s.target_load == 1 and s.threshold == 0.0 for s in busy.steps)
    assert busy.costs.target.calls == 0


@pytest.mark.parametrize("name, threshold, slope, load, want", [
    ("arbitrage", 0.5, 0.1, 3, 0.8),  # escalate when score > tau: raised
    ("specreason", 0.5, 0.1, 3, 0.2),  # escalate when score < tau: lowered
    ("random", 0.5, 0.25, 1, 0.25),
])
def test_threshold_moves_towards_keeping_under_load(name, threshold, slope, load, want, monkeypatch):
    import routers.base as base

    r = make_router(name, threshold, load_slope=slope, load_free=0)
    monkeypatch.setattr(base, "target_load", lambda ctx: load)

    class Ctx:
        target_load = None

    assert r.effective_threshold(Ctx()) == pytest.approx(want)


def test_load_options_are_checked():
    with pytest.raises(ConfigError, match="has no threshold"):
        make_router("target-only", None, load_slope=0.1)
    with pytest.raises(ConfigError, match="load_slope must be a finite number"):
        make_router("specreason", 0.5, load_slope=-1)
    with pytest.raises(ConfigError, match="load_slope must be a number"):
        make_router("specreason", 0.5, load_slope="lots")


class Squares:
    """A batch engine that records the batches it was given."""

    def __init__(self):
        self.batches = []

    def run_batch(self, requests):
        self.batches.append(sorted(requests))
        return [ValueError(f"bad {r}") if r < 0 else r * r for r in requests]


def test_lockstep_runs_one_batch_per_round():
    ls, eng = Lockstep(max_wait=5.0), Squares()
    out = {}

    def worker(i):
        with ls.worker(reserved=True):
            out[i] = [ls.call(eng, i * 10 + k) for k in range(3)]

    ls.reserve(4)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {i: [(i * 10 + k) ** 2 for k in range(3)] for i in range(4)}
    # the 5 s wait was never needed: every round ran as soon as all four workers were waiting
    assert eng.batches == [[k, 10 + k, 20 + k, 30 + k] for k in range(3)]


def test_lockstep_errors_reach_their_caller_and_a_busy_worker_delays_by_max_wait_only():
    ls, eng = Lockstep(max_wait=0.05), Squares()
    with pytest.raises(ValueError, match="bad -1"):
        ls.call(eng, -1)  # not a worker: runs at once
    busy = threading.Event()

    def idle_worker():
        with ls.worker():
            busy.wait(10)

    t = threading.Thread(target=idle_worker)
    t.start()
    with ls.worker():
        assert ls.call(eng, 3) == 9  # the other worker never calls: flushed after max_wait
    busy.set()
    t.join()
