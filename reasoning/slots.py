"""Session slots and trial bookkeeping for the step loop, and the loop's `StepContext`.

Each model keeps one session on its own rendering of the prompt. Both sessions hold the same
solution, step by step: each committed step is a `Piece` that carries the token ids its author wrote
(the step and its delimiter). A session that fell behind (because the other model wrote the last
steps) catches up lazily, one step at a time: with the author's token ids where both models share a
vocabulary (and its own ids where it wrote the step itself), else with the step's text, encoded alone
as the model encodes a step it writes. So a session never holds a token sequence its author did not
write, and a model that is never asked (the target under draft-only) never runs. While a step is
decided, the draft's step may sit "on trial" in a session: kept there if the step is kept, rolled back
if it is rejected or anyone asks for the plain prefix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasoning import metrics
from reasoning.backends.base import Backend, Generation, Session, Switch, Usage
from reasoning.context import Model, Piece, Report
from reasoning.errors import ConfigError
from reasoning.options import Limits
from reasoning.prompts import Prompt
from reasoning.segmenter import Cut, Segmenter
from reasoning.types import Costs, Problem, SolveConfig, Stage, Step


def exact_ids(backend: Backend, gen: Generation, piece: str) -> tuple[int, ...] | None:
    """The token ids of `piece` as `backend` wrote it in `gen`: the generation's longest run of tokens
    that spells a prefix of the piece, then the rest (a delimiter the segmenter added) encoded alone.
    None where the backend's sessions cannot take token ids."""
    if not getattr(backend, "vocab_key", None):
        return None
    ids, k = list(gen.token_ids), len(gen.token_ids)
    head = backend.decode(ids) if k else ""
    while k and not piece.startswith(head):
        k -= 1
        head = backend.decode(ids[:k]) if k else ""
    return tuple(ids[:k] + backend.encode(piece[len(head):]))


@dataclass
class Slot:
    """One model's session and how many pieces of the solution it already holds."""

    stage: Model
    backend: Backend
    prompt: Prompt | None = None  # this model's prompt (the <think> prefix depends on its template)
    session: Session | None = None
    held: int = 0
    # session length before the draft's current step, while the session holds it on trial (or, with
    # `written`, before a step it wrote with `write_step` or a proposal the router rejected: it stays until
    # a commit or a catch-up, which keep the part of it the committed steps repeat, token for token)
    trial: int | None = None
    written: bool = False
    kept: bool = False  # the session kept the draft's step from trial; the commit counts it held
    shared: frozenset[str] = frozenset()  # authors whose token ids this session takes as they are

    def ready(self, prompt: Prompt, pieces: Sequence[Piece]) -> Session:
        """The session holding exactly the prompt and the solution so far."""
        if self.session is None:
            self.session = self.backend.open_session(self.prompt or prompt)
            self.held = 0
        todo = pieces[self.held:]
        if self.trial is not None:
            same = self._repeated(todo)
            self.session.rollback(self.trial + same)
            self.trial, self.written = None, False
            if same:  # the session still holds the first `same` ids of what it lacks
                self.session.append_ids([i for p in todo for i in p.ids][same:])
                todo = []
        for piece in todo:
            self.put(piece)
        self.held = len(pieces)
        return self.session

    def _repeated(self, pieces: Sequence[Piece]) -> int:
        """How many ids after `trial` the pieces repeat exactly, where the session takes all their ids."""
        have = getattr(self.session, "token_ids", None)
        if not pieces or have is None or any(p.ids is None or p.author not in self.shared for p in pieces):
            return 0
        want = [i for p in pieces for i in p.ids]
        have = have[self.trial:]
        return next((j for j, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))

    def put(self, piece: Piece) -> Usage:
        """Append one piece: its author's token ids where this session takes them, else its text."""
        if piece.ids is not None and piece.author in self.shared:
            return self.session.append_ids(piece.ids)
        return self.session.append(piece.text)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class Sessions:
    """The solution so far (its pieces), both models' slots and the draft's step on trial."""

    def __init__(self, draft: Backend | None, target: Backend | None, prompt: Prompt, limits: Limits,
                 segmenter: Segmenter):
        self.prompt, self.limits, self.segmenter = prompt, limits, segmenter
        self.draft = Slot("draft", draft) if draft is not None else None
        self.target = Slot("target", target) if target is not None else None
        keys = {s.stage: getattr(s.backend, "vocab_key", None) for s in (self.draft, self.target) if s is not None}
        for slot in (self.draft, self.target):
            if slot is not None and keys[slot.stage]:
                slot.shared = frozenset(m for m, k in keys.items() if k == keys[slot.stage])
        self.pieces: list[Piece] = []
        self.text = ""  # the accepted solution: the pieces' text
        self.piece: str | None = None  # the draft's step on trial, with its delimiter
        self.piece_ids: tuple[int, ...] | None = None  # its token ids as the draft wrote them

    def slot(self, model: Model) -> Slot:
        return self.draft if model == "draft" else self.target

    def ready(self, model: Model) -> Session:
        return self.slot(model).ready(self.prompt, self.pieces)

    def with_draft_step(self, model: Model) -> Session:
        """A model's session holding the solution so far plus the draft's step on trial."""
        if self.piece is None:
            raise RuntimeError("there is no draft step to judge")
        slot = self.slot(model)
        if slot.trial is None or slot.written:
            session = slot.ready(self.prompt, self.pieces)
            slot.trial = session.n_tokens
            slot.put(Piece(self.piece, "draft", self.piece_ids))
        return slot.session

    def seed(self, step: int, model: Model) -> int | None:
        return None if self.limits.seed is None else self.limits.seed * 1_000_003 + step * 7 + (model == "target")

    def _seed(self, step: int, model: Model, prefix: str | Sequence[Piece]) -> int | None:
        """A generation's seed: each part of a step written in parts (after 0, 1, ... pieces) draws its own."""
        s = self.seed(step, model)
        return s if s is None or isinstance(prefix, str) else s + 7919 * len(prefix)

    def generate(self, model: Model, step: int, thinking: bool, cap: int, temperature: float | None = None,
                 seed: int | None = None, prefix: str | Sequence[Piece] = "",
                 switch: Switch | None = None) -> tuple[Generation, int]:
        """A model writes a step from the accepted prefix (it stays in its session), continuing
        `prefix` (text, or pieces with their authors' ids) when given. Returns the generation and the
        session length before it (and `prefix`). Where the session still holds what this model wrote for
        the step before (`write_step`), the part of it that `prefix` repeats exactly stays in its KV."""
        slot = self.slot(model)
        kept = self._still_written(slot, prefix)
        session = self.ready(model) if kept is None else slot.session
        mark = session.n_tokens if kept is None else slot.trial
        if isinstance(prefix, str):
            if prefix:
                session.append(prefix)
        elif kept is not None:
            session.append_ids(kept)
        else:
            for piece in prefix:
                slot.put(piece)
        more: dict = {} if switch is None else {"switch": switch}
        if (sampling := self.limits.sampling()) is not None:
            more["sampling"] = sampling
        gen = session.generate(max_tokens=cap, stop=self.segmenter.stops(thinking),
                               temperature=self.limits.temperature if temperature is None else temperature,
                               seed=self._seed(step, model, prefix) if seed is None else seed,
                               ignore_eos=self.limits.ignore_eos, **more)
        return gen, mark

    def _still_written(self, slot: Slot | None, prefix: str | Sequence[Piece]) -> list[int] | None:
        """When the session holds, after the accepted prefix, a step this model wrote with `write_step` and
        `prefix` is pieces with ids it takes: roll back to where the two part and return the ids still to
        append; else None (the caller rolls back to the accepted prefix and appends `prefix`)."""
        if slot is None or not slot.written or slot.trial is None or isinstance(prefix, str):
            return None
        if slot.held != len(self.pieces):  # written before a step it does not hold yet: not after the prefix
            return None
        same = slot._repeated(prefix)
        if same == 0:
            return None
        slot.session.rollback(slot.trial + same)
        return [i for p in prefix for i in p.ids][same:]

    def generate_at(self, model: Model, step: int, thinking: bool, cap: int, prefixes: Sequence[Sequence[Piece]],
                    temperature: float | None = None,
                    seeds: Sequence[int | None] | None = None) -> tuple[list[Generation], int]:
        """A model writes a step after each prefix (pieces after the accepted prefix; the i-th is step
        `step + i`, or seeded with `seeds[i]`): side by side in one batched call where its engine can
        (sessions forked from the accepted prefix, decoded together), else one call after another. The
        session is left at the accepted prefix and no step stays in it. Returns the generations and the
        calls they took."""
        slot = self.slot(model)
        session = self.ready(model)
        if seeds is None:
            seeds = [self.seed(step + i, model) for i in range(len(prefixes))]
        temperature = self.limits.temperature if temperature is None else temperature
        kw = dict(stop=self.segmenter.stops(thinking), temperature=temperature,
                  ignore_eos=self.limits.ignore_eos, sampling=self.limits.sampling())
        many = getattr(slot.backend, "generate_many", None)
        if many is not None and len(prefixes) > 1 and getattr(session, "can_fork", False):
            head = session.prefill()  # the accepted prefix's catch-up, run once for every fork
            forks = []
            try:
                for prefix in prefixes:
                    forks.append(f := session.fork())
                    for piece in prefix:
                        Slot(model, slot.backend, session=f, shared=slot.shared).put(piece)
                t0 = time.perf_counter()
                gens = many([(f, dict(kw, max_tokens=cap, seed=seeds[i])) for i, f in enumerate(forks)])
            finally:  # a failed call frees its forks' caches too
                for f in forks:
                    f.close()
            # one call's seconds: each row's own prefill, and the shared decoding split by tokens written
            prefill = [g.usage.prefill_seconds or 0.0 for g in gens]
            decode, written = max(0.0, time.perf_counter() - t0 - sum(prefill)), sum(len(g.token_ids) for g in gens)
            for g, p in zip(gens, prefill):
                g.usage.seconds = p + (decode * len(g.token_ids) / written if written else 0.0)
            u = gens[0].usage  # the call's first row carries the shared catch-up
            u.input_tokens, u.flops, u.seconds = u.input_tokens + head.input_tokens, u.flops + head.flops, \
                u.seconds + head.seconds
            u.prefill_seconds = (u.prefill_seconds or 0.0) + head.seconds
            return gens, 1
        gens = []
        for i, prefix in enumerate(prefixes):
            gen, mark = self.generate(model, step + i, thinking, cap, temperature, seeds[i], prefix=prefix)
            session.rollback(mark)
            gens.append(gen)
        return gens, len(gens)

    def piece_of(self, model: Model, gen: Generation, piece: str | None = None) -> Piece:
        """A step `model` wrote (`gen`) as a piece (the segmenter's cut of it unless `piece` is given)."""
        text = self.segmenter.cut(gen).piece if piece is None else piece
        return Piece(text, model, exact_ids(self.slot(model).backend, gen, text))

    def hold(self, gen: Generation, cut: Cut, mark: int) -> None:
        """The draft's proposal goes on trial in its own session, which holds exactly the piece."""
        piece = self.piece_of("draft", gen, cut.piece)
        self._hold_exactly(self.draft, gen, piece, mark)
        self.draft.trial, self.piece, self.piece_ids = mark, cut.piece, piece.ids

    @staticmethod
    def _hold_exactly(slot: Slot, gen: Generation, piece: Piece, mark: int) -> None:
        """Make the session, which holds `gen` after `mark`, hold exactly `piece` there."""
        session = slot.session
        if piece.ids is not None:
            have = getattr(session, "token_ids", None)
            if have is None or list(have[mark:]) != list(piece.ids):
                session.rollback(mark)
                session.append_ids(piece.ids)
        elif piece.text.startswith(gen.text):
            session.append(piece.text[len(gen.text):])
        else:  # an end stop was cut off: the session must hold the piece only
            session.rollback(mark)
            session.append(piece.text)

    def _keep_written(self, slot: Slot, piece: Piece) -> None:
        """A router wrote the step with `write_step` (after the prefix pieces it passed): the session keeps
        it when what it holds after the committed steps it has is exactly the steps since and this one."""
        since = [*self.pieces[slot.held:], piece]
        # the write began where the committed steps it held ended (a later call would have rolled it back)
        held = slot.session.n_tokens - slot.trial
        same = slot._repeated(since)  # 0 where not comparable: the next call rolls it back and catches up
        if held and same == held:  # the step, or its start (the other model wrote the rest)
            want = [i for p in since for i in p.ids]
            if len(want) > same:
                slot.session.append_ids(want[same:])
            slot.kept, slot.trial, slot.written = True, None, False
            slot.held = len(self.pieces)  # add() counts the new piece

    def settle(self, keep: bool) -> None:
        """After the decision: sessions holding the draft's step on trial keep it, or hold it as written: the
        commit or the next catch-up keeps what the step that replaces it repeats (often all of it)."""
        for slot in (self.draft, self.target):
            if slot is None or slot.trial is None or slot.written:
                continue
            if keep:
                slot.kept, slot.trial = True, None
            else:
                slot.written = True

    def commit(self, cut: Cut, model: Model | None = None, gen: Generation | None = None,
               mark: int | None = None) -> None:
        """Append a step to the solution. A step the draft kept from trial needs nothing else; for a
        step `model` wrote (`gen`), `mark` is where it starts in that model's session (None: it is
        not there): the session keeps it, holding exactly the step's token ids."""
        if model is None:
            piece = Piece(cut.piece, "draft", self.piece_ids)
        else:
            slot = self.slot(model)
            piece = self.piece_of(model, gen, cut.piece)
            if mark is not None:
                self._hold_exactly(slot, gen, piece, mark)
                slot.kept, slot.trial, slot.written = True, None, False
            # else the session holds what it held (a step written ahead, as lookahead's, finds it behind)
        for slot in (self.draft, self.target):  # a step it wrote (a router's, a candidate, a rejected
            if slot is not None and slot.written:  # proposal, part of a stitched one): kept if the ids agree
                self._keep_written(slot, piece)
        self.add(piece)

    def add(self, piece: Piece) -> None:
        """Append a piece to the solution; sessions that kept it already hold it."""
        for slot in (self.draft, self.target):
            if slot is not None and slot.kept:
                slot.held, slot.kept = len(self.pieces) + 1, False
        self.pieces.append(piece)
        self.text += piece.text

    def close(self) -> None:
        for slot in (self.draft, self.target):
            if slot is not None:
                slot.close()


@dataclass
class LoopContext:
    """The controller's `StepContext`. Built without `sessions` (tests, offline scoring) it gives
    the records and `report` only."""

    problem: Problem
    steps: list[Step]
    draft: Generation | None = None
    draft_text: str | None = None
    step_index: int = 0
    in_thinking: bool = False
    step_cap: int = 256
    limits: Limits = field(default_factory=Limits)
    config: SolveConfig | None = None
    sessions: Sessions | None = field(default=None, repr=False)
    reviewing: bool = False
    target_load: int | None = None
    reported: list[Report] = field(default_factory=list)

    def _live(self) -> Sessions:
        if self.sessions is None:
            raise RuntimeError("this step context has no model sessions")
        return self.sessions

    def backend(self, model: Model) -> Backend:
        slot = self._live().slot(model)
        if slot is None:
            raise RuntimeError(f"this solve has no {model} model")
        return slot.backend

    def session(self, model: Model, with_draft_step: bool = False) -> Session:
        live = self._live()
        return live.with_draft_step(model) if with_draft_step else live.ready(model)

    def write_step(self, model: Model, *, temperature: float | None = None, seed: int | None = None,
                   max_tokens: int | None = None, prefix: str | Sequence[Piece] = "",
                   switch: Switch | None = None) -> Generation:
        live = self._live()
        cap = self.step_cap if max_tokens is None else min(max_tokens, self.step_cap)
        gen, mark = live.generate(model, self.step_index, self.in_thinking, cap, temperature, seed, prefix, switch)
        slot = live.slot(model)  # the step stays in the session: kept if it is committed, else rolled back
        slot.trial, slot.written = mark, True  # by the next call that needs the plain prefix
        return gen

    def write_steps(self, model: Model, prefixes: Sequence[Sequence[Piece]], temperature: float | None = None,
                    seeds: Sequence[int | None] | None = None) -> tuple[list[Generation], int]:
        return self._live().generate_at(model, self.step_index, self.in_thinking, self.step_cap, prefixes,
                                        temperature, seeds)

    def piece(self, model: Model, gen: Generation) -> Piece:
        """A step `model` wrote, with its delimiter and token ids (to continue it with `write_step`)."""
        return self._live().piece_of(model, gen)

    def draft_head(self, n_tokens: int) -> Piece:
        """The proposal's first `n_tokens` tokens as a piece (text and the draft's ids)."""
        return Piece(self.draft_prefix(n_tokens), "draft", tuple(self.draft.token_ids[:n_tokens]))

    def draft_prefix(self, n_tokens: int) -> str:
        if self.draft is None:
            raise RuntimeError("there is no draft proposal")
        if n_tokens <= 0:
            return ""
        decode = getattr(self.backend("draft"), "decode", None)
        if decode is None:
            raise ConfigError(f"{self.backend('draft').name} cannot decode token ids, so a draft step cannot be "
                              "cut mid-step on it")
        text = decode(self.draft.token_ids[:n_tokens])
        if not self.draft.text.startswith(text):
            raise ValueError(f"the proposal's first {n_tokens} tokens do not decode to a prefix of its text")
        return text

    def step_text(self, gen: Generation) -> str:
        return self._live().segmenter.cut(gen).text

    def step_piece(self, gen: Generation) -> str:
        return self._live().segmenter.cut(gen).piece

    def report(self, stage: Stage, usage: Usage, *, on_trial: bool = False, thrown_away: bool = False,
               calls: int = 1) -> None:
        self.reported.append(Report(stage, usage, on_trial, thrown_away, calls))

    def charge(self, costs: Costs, start: int = 0, keep: bool = False) -> float:
        """Add the reports from `start` on to `costs` (reasoning.metrics.charge); returns their seconds."""
        return metrics.charge(costs, self.reported[start:], keep)
