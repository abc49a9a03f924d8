"""Token-exact sessions: after every step of every policy, each model's session holds exactly its
prompt's ids plus each committed step's ids as its author wrote them (the testbed pair shares one
vocabulary), never the ids of the steps' joined text re-encoded."""

import pytest

from eval.synthetic import generate
from reasoning.api import Solver
from reasoning.controller import Controller
from routers import make_router

PAIR = ("testbed-draft", "testbed-target")
PROBLEM = generate(7, steps=3, seed=0, split="test")[6]  # 7 - 4 = 3., 3 + 16 = 19., 19 - 4 = 15., answer
WRONG = generate(29, steps=3, seed=0, split="test")[28]  # the draft writes 42 + 33 = 76., 76 - 33 = 43.
LIMITS = {"max_steps": 5, "step_tokens": 48, "max_tokens": 256}
FAST = {"random": (0.6, {})}  # in the development loop: the target catches up two steps at once
POLICIES = FAST | {
    "draft-only": (None, {}),
    "target-only": (None, {}),
    "specreason": (0.75, {}),
    "arbitrage": (0.5, {"model": "testbed"}),
    "first-token": (0.0005, {}),  # keeps the first step, escalates the second
    "oracle": (0.0, {}),
    "handoff": (0.5, {}),
    "handoff/one": (0.1, {"way": "one"}),  # the target continues the draft's head: a step written after a prefix
    "cascade": (0.9, {"gate": "logprob", "arbitrage": "testbed", "confident": "-0.02"}),
    "best-of-n": (0.75, {"n": "2"}),
    "lookahead": (0.75, {"k": "2", "verify": "score"}),
    "lookahead/exact": (None, {"k": "2", "verifier": "none"}),  # the target's steps from forked sessions
}


def spy_generations(monkeypatch, backend, stage: str, log: list) -> None:
    """Record (stage, token ids, text, finish reason) of every generation of `backend`'s sessions."""
    opener = backend.open_session

    def open_session(prompt):
        session = opener(prompt)
        generate = session.generate

        def recorded(**kw):
            gen = generate(**kw)
            log.append((stage, tuple(gen.token_ids), gen.text, gen.finish_reason))
            return gen

        session.generate = recorded
        return session

    monkeypatch.setattr(backend, "open_session", open_session)


def check_exact(ctl: Controller, written: list) -> int:
    """The invariant, checked now; returns how many pieces matched a recorded generation exactly."""
    sessions, matched = ctl.sessions, 0
    for piece in sessions.pieces:
        if piece.author is None:
            continue
        slot = sessions.slot(piece.author)
        assert piece.ids is not None and slot.backend.decode(list(piece.ids)) == piece.text
        mine = [ids for stage, ids, text, _ in written if stage == piece.author and text == piece.text]
        if mine:  # a step committed as its author wrote it: the ids its generation returned
            assert piece.ids in mine, piece.text
            matched += 1
    for slot in (sessions.draft, sessions.target):
        if slot is None or slot.session is None:
            continue
        held = [i for p in sessions.pieces[: slot.held] for i in p.ids]
        ids = slot.session.token_ids[slot.session.n_prompt:]
        if slot.trial is None:
            assert ids == held, slot.stage
        elif not slot.written:  # the draft's step on trial follows the held steps
            assert ids[: len(held)] == held and tuple(ids[len(held):]) == sessions.piece_ids
        else:  # a step a router wrote and did not keep stays until the next call rolls it back
            assert ids[: len(held)] == held and slot.trial == slot.session.n_prompt + len(held)
    return matched


def run(monkeypatch, name: str, problem=PROBLEM, tau=None):
    tau, options = (POLICIES[name][0] if tau is None else tau), POLICIES[name][1]
    solver = Solver(*PAIR, make_router(name.split("/")[0], tau, **options), **LIMITS)
    written: list = []
    for backend, stage in ((solver.draft, "draft"), (solver.target, "target")):
        if backend is not None:  # an anchor loads one model
            spy_generations(monkeypatch, backend, stage, written)
    ctl = Controller(solver.draft, solver.target, solver.router, solver.limits, solver.config(solver.limits))
    counts = []
    sol = ctl.run(problem, on_step=lambda step: counts.append(check_exact(ctl, written)))
    return ctl, sol, counts, written


def _check(monkeypatch, name: str):
    ctl, sol, counts, _ = run(monkeypatch, name)
    assert len(counts) == len(sol.steps) and max(counts) >= 1
    pieces = ctl.sessions.pieces
    steps = [p for p in pieces if p.author is not None]
    assert len(steps) == len([s for s in sol.steps if s.kind != "forced_answer"])
    backend = ctl.sessions.target.backend if ctl.sessions.target else ctl.sessions.draft.backend
    joined = backend.encode("".join(p.text for p in steps))
    exact = [i for p in steps for i in p.ids]
    if len(steps) >= 2:  # what the old catch-up fed: the joined text re-encoded merges each "\n\n" with the next
        assert joined != exact
    return sol


@pytest.mark.parametrize("name", list(FAST))
def test_sessions_hold_each_steps_ids_as_its_author_wrote_them(monkeypatch, name):
    sol = _check(monkeypatch, name)
    authors = [s.author for s in sol.steps if s.kind != "forced_answer"]
    assert "draft" in authors and "target" in authors  # both sessions caught up on the other's steps


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in POLICIES if n not in FAST])
def test_every_policy_keeps_sessions_token_exact(monkeypatch, name):
    _check(monkeypatch, name)


class KVLog:
    """What every KV session ran, by position: a forward of several tokens at positions the session had run
    before with the same tokens, since the crop that dropped them, re-reads what it held (the waste of a
    step written, rolled back and fed again). One token is allowed: a rollback to a point whose logits were
    not kept re-runs its last token to get them."""

    def __init__(self):
        self.held: dict[int, dict[int, int]] = {}  # session id -> position -> token id in its KV
        self.dropped: dict[int, dict[int, int]] = {}  # session id -> what its last crop removed
        self.rereads: list[tuple[int, int]] = []  # (position, tokens re-read) of each multi-token re-read
        self.seen: list = []  # every session, kept alive so that no id is reused
        self.forwards: list[tuple[int, list[int]]] = []  # (session id, ids) of every forward
        self.owner: dict[int, object] = {}  # session id -> its backend

    def _held(self, session) -> dict[int, int]:
        if id(session) not in self.held:
            self.seen.append(session)
        return self.held.setdefault(id(session), {})

    def forward(self, session, ids) -> None:
        held, gone = self._held(session), self.dropped.get(id(session), {})
        self.forwards.append((id(session), list(ids)))
        self.owner[id(session)] = session.backend
        start, same = session._kv_len, 0
        for j, t in enumerate(ids):
            if gone.get(start + j) != t:
                break
            same += 1
        if same >= 2:
            self.rereads.append((start, same))
        held.update({start + j: t for j, t in enumerate(ids)})

    def crop(self, session, n: int) -> None:
        held = self._held(session)
        if session._kv_len > n:
            self.dropped[id(session)] = {p: t for p, t in held.items() if p >= n}
            for p in [p for p in held if p >= n]:
                del held[p]


def kv_logged(monkeypatch) -> KVLog:
    from reasoning.backends.kv import KVSession

    log, forward, crop = KVLog(), KVSession._forward, KVSession._crop_kv

    def logged_forward(self, ids, all_logits=False):
        log.forward(self, list(ids))
        return forward(self, ids, all_logits)

    def logged_crop(self, n):
        log.crop(self, n)
        return crop(self, n)

    monkeypatch.setattr(KVSession, "_forward", logged_forward)
    monkeypatch.setattr(KVSession, "_crop_kv", logged_crop)
    return log


# Known waste, not fixed yet: on this problem the oracle keeps the draft's 3 + 16 = 18. over the target's own
# 3 + 16 = 19. (the judge scores it higher), and the target's session reads again tokens of the step it held
REREADS = {"oracle": pytest.mark.xfail(strict=True, reason="the oracle re-reads a kept draft step (2 rereads)")}


@pytest.mark.parametrize("name", [pytest.param(n, marks=(() if n in FAST else (pytest.mark.slow,))
                                               + ((REREADS[n],) if n in REREADS else ())) for n in POLICIES])
def test_no_session_reads_again_the_tokens_it_held(monkeypatch, name):
    """Steps a model wrote stay in its KV cache: no policy rolls a session back and feeds it the same tokens
    again (a kept step, a judged proposal, a prefix already read)."""
    log = kv_logged(monkeypatch)
    ctl, sol, _, _ = run(monkeypatch, name)
    assert sol.steps and log.held  # the sessions ran
    assert log.rereads == [], log.rereads


def _common(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@pytest.mark.parametrize("name,tau", [pytest.param("target-only", None, marks=pytest.mark.slow),
                                      pytest.param("draft-only", None, marks=pytest.mark.slow),
                                      ("random", None),
                                      ("arbitrage", 0.15)])  # rejects 42 + 33 = 76. for 42 + 33 = 75.
def test_each_model_runs_the_tokens_the_method_needs_once(monkeypatch, name, tau):
    """The count, per model, of tokens a method needs run (prefill and decode), from the solve's steps: the
    target runs its prompt and the solution up to the last step it wrote, each token once; the draft also
    runs its proposals, and of a rejected one, the tokens after the part the step replacing it repeats.
    Equal to what the KV sessions ran (one re-read token more fails it) and to the stage's FLOPs."""
    log = kv_logged(monkeypatch)
    ctl, sol, _, written = run(monkeypatch, name, WRONG, tau)
    assert sol.stop_reason == "answer" and not sol.forced_answer
    pieces = [p for p in ctl.sessions.pieces if p.author is not None]
    assert len(pieces) == len(sol.steps)
    steps = [list(p.ids) for p in pieces]
    sessions = {s.backend.name: s for s in log.seen}  # one session a model under these policies
    assert len(sessions) == len(log.seen) == (1 if name.endswith("-only") else 2)
    models = {"draft": ctl.draft_backend, "target": ctl.target_backend}
    prompt = {m: sessions[b.name].n_prompt for m, b in models.items() if b is not None and b.name in sessions}
    # a model's last sampled token is never run, but for a step that ended at the end-of-sequence token,
    # which the step does not hold: its last token was run to sample it
    unrun = {True: 0, False: 1}
    need: dict[str, int] = {}
    if name != "draft-only":
        last = max(i for i, s in enumerate(sol.steps) if s.author == "target")
        need["target"] = prompt["target"] + sum(len(s) for s in steps[: last + 1]) - unrun[sol.steps[last].end == "eos"]
    if name != "target-only":  # the proposals, in order: one draft generation a step under these policies
        proposals = [list(ids) for stage, ids, _, _ in written if stage == "draft"]
        end = [finish for stage, _, _, finish in written if stage == "draft"][-1]
        assert [len(p) for p in proposals] == [s.draft_tokens for s in sol.steps]
        dropped = sum(max(0, len(p) - 1 - _common(p, s)) for p, s, step in zip(proposals, steps, sol.steps[:-1])
                      if step.author == "target")
        if name == "arbitrage":
            assert dropped == 2  # the rejected proposal's last 3 tokens differ; its last one never ran
        need["draft"] = (prompt["draft"] + sum(len(s) for s in steps[:-1]) + len(proposals[-1]) - unrun[end == "eos"]
                         + dropped)
    assert len(need) == len(sessions)
    for stage, n in need.items():
        backend = models[stage]
        ran = sum(len(ids) for sid, ids in log.forwards if log.owner[sid] is backend)
        assert ran == n, (stage, ran, n)
        assert sol.costs.stage(stage).flops == pytest.approx(2.0 * backend.n_params * n), stage
