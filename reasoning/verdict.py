"""Speculative Verdict: several small experts answer, a consensus score picks the most agreeing ones, a
large verdict model reads their reasoning and decides.

1. Candidates: every expert writes one reasoning path ending in ``\\boxed{ANSWER}``; its answer is
   taken from that same output (one generation per expert).
2. Consensus: every expert j scores every distinct candidate answer a as the assistant's reply:
   NLL_j(a) = mean negative log-likelihood of the tokens of a + "}" after the prompt (image + question)
   and the lead "The final answer is \\boxed{" (the closing brace keeps "1" from scoring as a prefix of
   "12"). The prompt is encoded once per scorer (the expert's own session, rolled back) and reused for
   every candidate. The consensus score of candidate i is sum_j |NLL_j(a_i) - NLL_j(a_j)| over the
   experts j that gave an answer; lower is better. Identical answers share a score (the sum does not
   depend on who gave the answer: the term of an expert whose own answer is a_i is zero).
3. Selection, with a deterministic tie rule: the m experts with the lowest score; ties go to the answer
   more experts gave, then to the expert listed first. Experts without an answer are never selected.
4. Verdict: the verdict model gets the image, the question and the selected paths, anonymised
   ("Solution 1..m"), shuffled with a seeded RNG, each capped at `path_tokens` (its head and tail, so the
   boxed answer survives) and followed by "Proposed answer: X", and answers in ``\\boxed{}``. If its
   output has no boxed answer, the consensus winner's answer is used. As in the paper, the verdict is
   called even when the selected experts agree (a minority-correct path can still win); with
   `skip_on_agreement=True` their shared answer is final and the verdict model is not called.

Every stage's tokens and seconds are accounted: candidates, scoring, verdict. Text-only mode (math) is
the same with text experts, or several samples of one model (`samples=k`, temperature > 0).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoning.answers import answers_match, extract_answer, last_boxed
from reasoning.backends import Backend, Session, load_backend
from reasoning.errors import ConfigError
from reasoning.options import DEFAULT_DRAFT, DEFAULT_TARGET
from reasoning.prompts import FEW_SHOT, MATH_SYSTEM, PLAIN_STOPS, Prompt, check_question
from reasoning.specs import ModelSpec, parse_spec
from reasoning.types import Costs, Problem, Solution, SolveConfig, StageCost, Step

log = logging.getLogger(__name__)

ANSWER_LEAD = "The final answer is \\boxed{"
IMAGE_SYSTEM = ("Answer the question about the image. Reason step by step, then give the final answer in the "
                "form \\boxed{ANSWER}.")
CAP_MARKER = "\n[...]\n"  # between the head and the tail of a capped path
VERDICT_INSTRUCTION = (
    "Below are {m} solutions to this question from different solvers. They may disagree. Check their "
    "reasoning, decide which final answer is correct (or work it out yourself), and give the final answer "
    "in the form \\boxed{{ANSWER}}."
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Record):
    expert: int  # position in the expert list
    spec: str
    text: str
    answer: str | None
    tokens: int


def distinct_answers(candidates: Sequence[Candidate]) -> tuple[list[str], list[int | None]]:
    """The distinct answers (the first spelling of each, in order) and each candidate's index into them
    (None: it gave no answer)."""
    answers: list[str] = []
    own: list[int | None] = []
    for c in candidates:
        if c.answer is None:
            own.append(None)
            continue
        k = next((k for k, a in enumerate(answers) if answers_match(c.answer, a)), None)
        if k is None:
            answers.append(c.answer)
            k = len(answers) - 1
        own.append(k)
    return answers, own


class VerdictCosts(_Record):
    candidates: StageCost = Field(default_factory=StageCost)
    scoring: StageCost = Field(default_factory=StageCost)
    verdict: StageCost = Field(default_factory=StageCost)


class VerdictResult(_Record):
    question: str
    images: list[str] = Field(default_factory=list)
    experts: list[str]
    verdict_model: str
    m: int
    temperature: float = 0.0
    seed: int = 0
    few_shot: int = 0
    skip_on_agreement: bool = False  # the setting; verdict_skipped: whether it applied to this question
    candidates: list[Candidate]
    answers: list[str]  # distinct candidate answers (first spelling of each)
    nll: list[list[float | None]]  # nll[j][k]: expert j's NLL of answers[k] (None: expert j gave no answer)
    consensus: list[float | None]  # per candidate (None: no answer)
    selected: list[int]  # experts, best first
    shown_order: list[int]  # the selected experts in the order the verdict prompt shows them
    verdict_skipped: bool
    verdict_text: str | None = None
    answer: str | None
    answer_source: Literal["agreement", "verdict", "consensus", "none"]
    costs: VerdictCosts
    wall_seconds: float

    def to_solution(self, problem: Problem) -> Solution:
        """As a `Solution` record (for eval): candidates and scoring are the draft and judge stages, the
        verdict the target stage; one step holds the final text."""
        c = Costs()
        c.draft.add(self.costs.candidates)
        c.judge.add(self.costs.scoring)
        c.target.add(self.costs.verdict)
        if self.verdict_skipped or self.verdict_text is None:
            best = next((cand for cand in self.candidates if cand.expert == (self.selected or [-1])[0]), None)
            text, author = (best.text if best else ""), "draft"
        else:
            text, author = self.verdict_text, "target"
        if self.answer is not None and last_boxed(text) != self.answer:
            text = f"{text}\n\nThe answer is \\boxed{{{self.answer}}}."
        step = Step(index=0, text=text.strip(), author=author, kind="answer",
                    tokens=sum(cd.tokens for cd in self.candidates), costs=c,
                    decision="escalate" if author == "target" else "keep")
        return Solution(problem=problem, steps=[step], answer=self.answer, answer_rule=self.answer_source,
                        stop_reason="answer", costs=c, wall_seconds=self.wall_seconds,
                        config=SolveConfig(draft=",".join(self.experts), target=self.verdict_model,
                                           router="verdict", threshold=None, max_steps=1,
                                           max_tokens=sum(c.tokens for c in self.candidates), step_tokens=0,
                                           delimiter="", few_shot=self.few_shot, temperature=self.temperature,
                                           seed=self.seed))


def _consensus(nll: list[list[float | None]], own: list[int | None]) -> list[float | None]:
    """Score of each expert's answer: sum over scorers j of |nll[j][k_i] - nll[j][k_j]|."""
    out: list[float | None] = []
    for k_i in own:
        if k_i is None:
            out.append(None)
            continue
        out.append(math.fsum(abs(nll[j][k_i] - nll[j][k_j]) for j, k_j in enumerate(own) if k_j is not None))
    return out


def select(consensus: list[float | None], own: list[int | None], m: int) -> list[int]:
    """The m experts with the lowest consensus score; ties: more experts gave the answer, then list order."""
    support = {k: sum(1 for x in own if x == k) for k in own if k is not None}
    ranked = sorted((i for i, s in enumerate(consensus) if s is not None),
                    key=lambda i: (round(consensus[i], 9), -support[own[i]], i))
    return ranked[:m]


def _answer_nll(session: Session, answer: str) -> tuple[float, int]:
    """(mean NLL, input tokens fed) of `answer` and its closing brace, after the session's text; the
    brace makes "1" pay for the chance of going on to "12". The caller rolls the session back."""
    sc = session.score(answer + "}")
    return (-math.fsum(sc.logprobs) / len(sc.logprobs) if sc.logprobs else 0.0), sc.usage.input_tokens


def _keep(backend: Backend, text: str, tokens: int, tail: bool = False) -> str:
    """The start (or the end) of `text`, at most `tokens` tokens of `backend`, cut at a character."""
    n = backend.count_tokens(text)
    while n > tokens and text:
        keep = max(0, int(len(text) * tokens / n) - 1)
        text = (text[len(text) - keep:] if keep else "") if tail else text[:keep]
        n = backend.count_tokens(text)
    return text


def _cap(backend: Backend, text: str, tokens: int) -> str:
    """`text` in at most `tokens` tokens of `backend`: if longer, its first third and last two thirds of
    the budget joined by CAP_MARKER, so the final answer at the end survives."""
    if backend.count_tokens(text) <= tokens:
        return text
    room = tokens - backend.count_tokens(CAP_MARKER)
    if room < 3:
        return _keep(backend, text, tokens, tail=True)
    head = _keep(backend, text, room // 3)
    tail_budget = room - room // 3
    while True:  # tokens at the joins may merge differently: shrink the tail until the whole fits
        out = head + CAP_MARKER + _keep(backend, text[len(head):], tail_budget, tail=True)
        if backend.count_tokens(out) <= tokens or tail_budget == 0:
            return out
        tail_budget -= 1


def shown_paths(backend: Backend, paths: Sequence[tuple[str, str | None]], path_tokens: int) -> str:
    """The paths as the verdict model sees them: "Solution n:", the path capped to `path_tokens`, and
    its proposed answer on a line of its own (as in the paper's prompt)."""
    return "\n\n".join(f"Solution {n + 1}:\n{_cap(backend, text, path_tokens)}\nProposed answer: {answer or '(none)'}"
                       for n, (text, answer) in enumerate(paths))


class Verdict:
    """Loads the experts and the verdict model once; `run()` answers one question."""

    def __init__(self, experts: Sequence[str | ModelSpec], verdict_model: str | ModelSpec, m: int = 3,
                 samples: int | None = None, temperature: float | None = None, seed: int = 0,
                 max_tokens: int = 384, verdict_tokens: int = 256, path_tokens: int = 256,
                 few_shot: int = 2, skip_on_agreement: bool = False):
        specs = [parse_spec(e) if isinstance(e, str) else e for e in experts]
        if not specs:
            raise ConfigError("verdict needs at least one expert model")
        if samples is not None:
            if len(specs) != 1 or samples < 2:
                raise ConfigError("samples=k (k >= 2) draws k experts from one model: give exactly one expert")
            specs = specs * samples
        if len(specs) < 2:
            raise ConfigError("verdict needs at least two experts (several models, or samples=k of one)")
        if not 1 <= m <= len(specs):
            raise ConfigError(f"m must be between 1 and the number of experts ({len(specs)}), got {m}")
        if temperature is None:
            temperature = 0.7 if samples else 0.0
        if temperature < 0 or (samples and temperature == 0):
            raise ConfigError("temperature must be >= 0, and > 0 when sampling several experts from one model")
        for name, value in (("max_tokens", max_tokens), ("verdict_tokens", verdict_tokens),
                            ("path_tokens", path_tokens)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if not 0 <= few_shot <= len(FEW_SHOT):
            raise ConfigError(f"few_shot must be between 0 and {len(FEW_SHOT)}, got {few_shot}")
        self.specs, self.m, self.seed, self.temperature = specs, m, seed, temperature
        self.skip_on_agreement = skip_on_agreement
        self.max_tokens, self.verdict_tokens, self.path_tokens, self.few_shot = (
            max_tokens, verdict_tokens, path_tokens, few_shot)
        self.verdict_spec = parse_spec(verdict_model) if isinstance(verdict_model, str) else verdict_model
        self.backends = [load_backend(s) for s in specs]
        self.verdict_backend = load_backend(self.verdict_spec)

    def _prompt(self, question: str, images: tuple, system: str | None = None, examples: bool = True) -> Prompt:
        kw: dict[str, Any] = {"images": images} if images else {}
        if images:
            return Prompt(question, system or IMAGE_SYSTEM, (), **kw)
        shots = tuple(FEW_SHOT[: self.few_shot]) if examples else ()
        return Prompt(question, system or MATH_SYSTEM, shots, **kw)

    def _candidates(self, prompt, costs: VerdictCosts) -> tuple[list, list[int], list[Candidate]]:
        """1. One generation per expert: its reasoning path and answer from the same output. Returns the
        open sessions, each one's prompt length, and the candidates."""
        sessions, marks, candidates = [], [], []
        for i, (spec, b) in enumerate(zip(self.specs, self.backends)):
            s = b.open_session(prompt)
            marks.append(s.n_tokens)
            stops = [] if b.turn_markers() is not None else list(PLAIN_STOPS)
            g = s.generate(max_tokens=self.max_tokens, stop=stops, temperature=self.temperature,
                           seed=self.seed * 1_000_003 + i)
            costs.candidates.add(g.usage.cost())
            text = g.text[: -len(g.stop)] if g.stop in PLAIN_STOPS else g.text
            answer, _ = extract_answer(text)
            sessions.append(s)
            candidates.append(Candidate(expert=i, spec=str(spec), text=text.strip(), answer=answer,
                                        tokens=len(g.token_ids)))
        return sessions, marks, candidates

    @staticmethod
    def _score(sessions, marks: list[int], answers: list[str], own: list[int | None],
               costs: VerdictCosts) -> list[list[float | None]]:
        """2. Every expert that answered scores each distinct answer after its own prompt (reused for
        every answer); closes the sessions."""
        nll: list[list[float | None]] = []
        for j, s in enumerate(sessions):
            if own[j] is None or len(answers) < 2:
                nll.append([None] * len(answers) if own[j] is None else [0.0] * len(answers))
                continue
            t0 = time.perf_counter()
            s.rollback(marks[j])  # back to the encoded prompt (image + question)
            s.append(ANSWER_LEAD)
            mark = s.n_tokens
            row: list[float | None] = []
            fed = 0
            for a in answers:
                value, n = _answer_nll(s, a)
                row.append(value)
                fed += n
                s.rollback(mark)
            costs.scoring.add(StageCost(calls=len(answers), input_tokens=fed, seconds=time.perf_counter() - t0))
            nll.append(row)
        for s in sessions:
            s.close()
        return nll

    def _verdict(self, question: str, loaded: tuple, shown: list[Candidate], costs: VerdictCosts) -> str:
        """The verdict model's text on the shown paths, in the order given."""
        vb = self.verdict_backend
        paths = shown_paths(vb, [(c.text, c.answer) for c in shown], self.path_tokens)
        body = f"{question}\n\n{VERDICT_INSTRUCTION.format(m=len(shown))}\n\n{paths}"
        s = vb.open_session(self._prompt(body, loaded, examples=False))
        stops = [] if vb.turn_markers() is not None else list(PLAIN_STOPS)
        g = s.generate(max_tokens=self.verdict_tokens, stop=stops, temperature=0.0)
        s.close()
        costs.verdict.add(g.usage.cost())
        return g.text[: -len(g.stop)] if g.stop in PLAIN_STOPS else g.text

    def run(self, question: str | Problem, images: Sequence[Any] = ()) -> VerdictResult:
        t_start = time.perf_counter()
        problem = question if isinstance(question, Problem) else Problem(question=question)
        check_question(problem.question)
        items = list(images) or list(problem.images)
        refs: list[str] = []
        loaded: tuple = ()
        if items:
            from reasoning.images import image_ref, load_images

            loaded = tuple(load_images(items))  # bad images fail here, before any model runs
            refs = [image_ref(i) for i in items]
        costs = VerdictCosts()
        prompt = self._prompt(problem.question, loaded)
        sessions, marks, candidates = self._candidates(prompt, costs)
        answers, own = distinct_answers(candidates)
        nll = self._score(sessions, marks, answers, own, costs)
        consensus = _consensus(nll, own) if len(answers) >= 2 else [None if k is None else 0.0 for k in own]
        chosen = select(consensus, own, self.m)

        # 3. verdict (skipped when the selected experts agree, if asked)
        picked = [candidates[i] for i in chosen]
        agree = bool(picked) and all(answers_match(p.answer, picked[0].answer) for p in picked)
        order = list(chosen)
        random.Random(self.seed).shuffle(order)
        verdict_text, source = None, "none"
        answer = None
        skipped = agree and self.skip_on_agreement
        if skipped:
            answer, source = picked[0].answer, "agreement"
        else:
            order = order if order else list(range(min(self.m, len(candidates))))
            verdict_text = self._verdict(problem.question, loaded, [candidates[i] for i in order], costs)
            answer = last_boxed(verdict_text)
            source = "verdict"
            if answer is None and picked:
                answer, source = picked[0].answer, "consensus"
        return VerdictResult(
            question=problem.question, images=refs, experts=[str(s) for s in self.specs],
            verdict_model=str(self.verdict_spec), m=self.m, temperature=self.temperature, seed=self.seed,
            few_shot=self.few_shot, skip_on_agreement=self.skip_on_agreement, candidates=candidates,
            answers=answers, nll=nll, consensus=consensus, selected=chosen, shown_order=order, verdict_skipped=skipped,
            verdict_text=verdict_text, answer=answer, answer_source=source, costs=costs,
            wall_seconds=time.perf_counter() - t_start)

    def solve(self, problem: str | Problem) -> Solution:
        """`run()` as a `Solution` record, for eval and the solve-style API."""
        problem = problem if isinstance(problem, Problem) else Problem(question=problem)
        return self.run(problem).to_solution(problem)


def verdict(question: str | Problem, images: Sequence[Any] = (), experts: Sequence[str] = (DEFAULT_DRAFT,),
            verdict_model: str = DEFAULT_TARGET, m: int = 3, samples: int | None = None,
            **options: Any) -> VerdictResult:
    """Speculative Verdict for one question (optionally about images); see the module docstring.

    `experts`: model specs (or one spec with `samples=k`); `verdict_model`: the large model's spec;
    options: temperature, seed, max_tokens, verdict_tokens, path_tokens, few_shot, skip_on_agreement."""
    if samples is None and len(experts) == 1:
        samples = 5
    return Verdict(experts, verdict_model, m=m, samples=samples, **options).run(question, images)
