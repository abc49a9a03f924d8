"""Method fidelity and robustness (issue 12): ties, audits of identical steps, SpecReason's greedy
reading, reasoning-model templates that open <think>, answers after </think>, policy-against-policy
speedups, router provenance, and bad input (too long, not UTF-8, NUL, broken GGUF files)."""

import json
import logging
import os
import shutil

import pytest

from reasoning import solve
from reasoning.api import Solver
from reasoning.errors import ConfigError
from reasoning.types import Problem, Solution, SolveConfig, Step

from .conftest import QUESTION

SHORT = {"max_steps": 2, "step_tokens": 24, "max_tokens": 64, "few_shot": 0}


def one_line(r, msg):
    assert r.returncode == 2 and msg in r.error_line(), r.stderr


# --------------------------------------------------------------------------- ties and audits


@pytest.mark.slow
def test_identical_models_tie_the_oracle_keeps_the_draft_and_skips_the_second_judge(smol):
    sol = solve(QUESTION, draft="smollm2-135m", target="smollm2-135m", router="oracle", **SHORT)
    routed = [s for s in sol.steps if s.decision is not None]
    assert routed and all(s.decision == "keep" and s.author == "draft" for s in routed)
    # the first step starts from the same prompt in both sessions, so the target writes it word for word:
    # exactly a tie (not float noise), judged once. Later steps may differ in tokenisation (the target's
    # session re-reads the draft's text), and only those are judged twice.
    assert routed[0].target_score == routed[0].score
    assert sol.costs.judge.calls == len(routed) + sum(s.target_score != s.score for s in routed)


@pytest.mark.slow
def test_audit_of_a_word_for_word_rewrite_does_not_crash(smol):
    # tau 1.0 escalates every step; the same model rewrites it word for word; the audit must not crash
    sol = solve(QUESTION, draft="smollm2-135m", target="smollm2-135m", router="specreason", threshold=1.0,
                router_options={"audit": "true"}, **SHORT)
    esc = [s for s in sol.steps if s.decision == "escalate"]
    assert esc and all(s.text == s.draft_text for s in esc)
    assert all(s.wasted_escalation is True and s.target_score == s.score for s in esc)
    assert sol.costs.judge.calls == len(esc)  # identical steps are not judged twice


def test_collecting_oracle_labels_identical_steps_false():
    from routers.base import TIE_TOLERANCE, same_step, target_better

    assert same_step("3 + 4 = 7.", "  3 +  4 = 7.\n") and not same_step("3 + 4 = 7.", "3 + 4 = 8.")
    assert not target_better(0.5 + 4e-7, 0.5) and not target_better(0.5 + TIE_TOLERANCE / 2, 0.5)
    assert target_better(0.6, 0.5) and not target_better(0.6, 0.5, tau=0.2)


# --------------------------------------------------------------------------- SpecReason greedy


class _Top:
    """Only the top-token call: forces the path where the best digit does not settle the argmax."""

    def __init__(self, token):
        self.token, self.calls = token, 0

    def next_token_top(self):
        from reasoning.backends.base import Usage

        self.calls += 1
        return self.token, -0.1, Usage(input_tokens=0)


def test_greedy_is_the_argmax_over_the_vocabulary_and_expected_the_mean():
    from judges.specreason import greedy_score

    probs = [0.0] * 10
    probs[7], probs[3] = 0.6, 0.2  # the best digit has more than all other tokens together
    assert greedy_score(probs, _Top("x")) == pytest.approx(7 / 9)
    probs = [0.0] * 10
    probs[7], probs[3] = 0.3, 0.1  # 0.6 of the mass is elsewhere: the top token decides
    s = _Top("The")
    assert greedy_score(probs, s) == 0.0 and s.calls == 1  # a non-digit argmax scores 0
    assert greedy_score(probs, _Top("7")) == pytest.approx(7 / 9)
    expected = sum(i * p for i, p in enumerate(probs)) / sum(probs) / 9
    assert expected == pytest.approx((7 * 0.3 + 3 * 0.1) / 0.4 / 9)


@pytest.mark.slow
def test_session_top_token_is_the_full_argmax(smol):
    import torch

    from reasoning.prompts import Prompt

    s = smol.open_session(Prompt.math(QUESTION, 0))
    token, lp, usage = s.next_token_top()
    logits, _ = s._next_logits()
    i = int(torch.argmax(logits))
    assert token == smol.decode([i]) and lp == pytest.approx(float(torch.log_softmax(logits, -1)[i]), abs=1e-5)
    assert usage.input_tokens > 0 and usage.flops == 2 * smol.n_params * usage.input_tokens


@pytest.mark.slow
@pytest.mark.parametrize("step", ["Ava has 12 + 5 = 17 apples.", "Ava has 12 + 5 = 99 apples.", "Banana."])
def test_judge_on_session_reads_both_modes_from_the_full_distribution(smol, step):
    import torch

    from judges.specreason import DIGITS, judge_on_session, judge_suffix
    from reasoning.prompts import Prompt

    s = smol.open_session(Prompt.math(QUESTION, 0))
    mark = s.n_tokens
    s.append(judge_suffix(smol, step + "\n\n"))
    logits, _ = s._next_logits()
    p = torch.softmax(logits.detach().float(), -1)
    ids = [smol.encode(d)[0] for d in DIGITS]
    top = smol.decode([int(torch.argmax(p))])
    s.rollback(mark)
    want_expected = float(sum(i * p[t] for i, t in enumerate(ids)) / sum(p[t] for t in ids)) / 9
    want_greedy = int(top) / 9 if top in DIGITS else 0.0
    assert judge_on_session(s, smol, step + "\n\n")[0] == pytest.approx(want_expected, abs=1e-4)
    assert judge_on_session(s, smol, step + "\n\n", mode="greedy")[0] == pytest.approx(want_greedy)
    assert s.n_tokens == mark  # the session is left as it was


# --------------------------------------------------------------------------- reasoning-model templates


@pytest.fixture(scope="module")
def think_model(tmp_path_factory, smol):
    """SmolLM2 with a chat template that opens <think> in the generation prompt (as R1-Distill's does)."""
    from reasoning.backends.hf import transformers_dir

    src = transformers_dir("smollm2-135m")
    d = tmp_path_factory.mktemp("think-template")
    for f in src.iterdir():
        if f.name == "chat_template.jinja":
            text = f.read_text()
            assert "add_generation_prompt" in text
            (d / f.name).write_text(text.rstrip() + "{% if add_generation_prompt %}<think>\n{% endif %}")
        elif f.is_file():
            os.symlink(f, d / f.name)
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("think", [True, False])
def test_a_template_that_opens_think_gets_it_once_and_steps_start_inside_thinking(think_model, think):
    from reasoning.backends import load_backend
    from reasoning.controller import Controller, Limits
    from routers import make_router

    b = load_backend(think_model)
    lim = Limits(max_steps=1, step_tokens=16, max_tokens=32, few_shot=0, think=think, force_answer=False)
    cfg = SolveConfig(draft=think_model, target="-", router="draft-only", max_steps=1, max_tokens=32, step_tokens=16,
                      delimiter="\n\n", few_shot=0, temperature=0.0)
    c = Controller(b, None, make_router("draft-only"), lim, cfg)
    sol = c.run(Problem(question=QUESTION))
    prompt = c.sessions.draft.prompt or c.sessions.prompt
    assert (b.render(prompt) + "").count("<think>") == 1  # the template's, not a second one
    assert c._head == "<think>\n" and sol.steps[0].in_thinking  # inside thinking with or without think=True
    assert "</think>" in c.segmenter.stops(True)


def test_the_answer_is_read_after_think_everywhere():
    steps = [Step(index=0, text="maybe \\boxed{3}", author="draft", in_thinking=True),
             Step(index=1, text="</think>", author="draft", in_thinking=True, end="think_end"),
             Step(index=2, text="The answer is \\boxed{5}.", author="draft")]
    cfg = SolveConfig(draft="d", target="t", router="r", max_steps=3, max_tokens=9, step_tokens=9, delimiter="\n\n",
                      few_shot=0, temperature=0.0)
    sol = Solution(problem=Problem(question="q", gold="5", meta={"answer_format": "integer"}), steps=steps,
                   stop_reason="answer", config=cfg)
    assert sol.answer_text == "The answer is \\boxed{5}." and sol.correct is True
    sol.steps = steps[:1]  # thinking never closed: a tentative value inside it is no answer
    assert sol.answer_text == "" and sol.correct is False
    from reasoning.context import Piece
    from reasoning.controller import Controller, Limits
    from reasoning.prompts import Prompt
    from reasoning.segmenter import Segmenter
    from reasoning.slots import Sessions

    c = Controller.__new__(Controller)
    c.segmenter, c._head = Segmenter(), "<think>\n"
    c.sessions = Sessions(None, None, Prompt.math("q", 0), Limits(), c.segmenter)
    c.sessions.add(Piece("so \\boxed{3}\n\n"))
    assert c._answer_region() == ""  # so the forced-answer rule still fires
    c.sessions.add(Piece("</think>\n\nThe answer is \\boxed{4}."))
    assert c._answer_region() == "\n\nThe answer is \\boxed{4}."


@pytest.mark.slow
def test_think_mode_without_a_closing_tag_forces_an_answer_outside_thinking(smol):
    sol = solve(QUESTION, router="draft-only", max_steps=2, think=True, few_shot=0, step_tokens=32)
    assert sol.steps[0].in_thinking
    assert not any("</think>" in s.text for s in sol.steps[:-1])  # the tiny model never closes it
    last = sol.steps[-1]
    assert sol.forced_answer and last.kind == "forced_answer" and not last.in_thinking
    assert last.text.startswith("The answer is \\boxed{")


# --------------------------------------------------------------------------- router provenance


@pytest.mark.slow
def test_router_file_records_its_models_and_warns_once_on_others(tmp_path, caplog):
    from routers.arbitrage import DEFAULT_MODEL_DIR
    from routers.arbitrage_model import META_FILE

    d = tmp_path / "router"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    meta = json.loads((d / META_FILE).read_text())
    # the draft as another spec of the same model (token-level speculation is lossless): not a mismatch
    meta["trained_with"] = {"draft": "hf:smollm2-135m?spec_tokens=2", "target": "other-target", "judge": "specreason",
                            "step_tokens": 64, "max_tokens": 384}
    (d / META_FILE).write_text(json.dumps(meta))
    solver = Solver(router="arbitrage", threshold=0.5, router_options={"model": str(d)}, max_steps=2,
                    step_tokens=64, max_tokens=384)
    with caplog.at_level(logging.WARNING, logger="routers.arbitrage"):
        for _ in range(2):  # once over the solver's solves, not once a solve
            solver.solve(QUESTION)
    warnings = [r for r in caplog.records if "trained on other traces" in r.getMessage()]
    assert len(warnings) == 1 and "target 'gemma3-270m' (trained with 'other-target')" in warnings[0].getMessage()
    assert "draft '" not in warnings[0].getMessage()


def test_train_router_records_the_collection(tmp_path):
    from training.train import _trained_with

    (tmp_path / "collect.json").write_text(json.dumps({"identity": {
        "draft": "testbed-draft", "target": "testbed-target", "judge": "specreason", "step_tokens": 96,
        "max_tokens": 512, "dataset": "synthetic", "limit": 5}}))
    assert _trained_with(tmp_path) == {"draft": "testbed-draft", "target": "testbed-target", "judge": "specreason",
                                       "step_tokens": 96, "max_tokens": 512, "dataset": "synthetic"}


# --------------------------------------------------------------------------- bad input


@pytest.mark.slow
def test_a_question_longer_than_the_context_fails_before_any_prefill(smol):
    import time

    solver = Solver("smollm2-135m", router="draft-only")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"too long for smollm2-135m: its prompt is \d+ tokens and the model's "
                                          r"context holds 8192"):
        solver.solve("1234567890 " * 20_000)
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_cli_long_question_invalid_utf8_and_broken_gguf(cli, tmp_path):
    one_line(cli("solve", "9" * 100_000, "--router", "draft-only"), "too long for smollm2-135m")
    one_line(cli("solve", os.fsdecode(b"caf\xff?"), "--router", "draft-only"), "not valid UTF-8")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all" * 100)
    one_line(cli("solve", "2+2?", "--draft", str(fake), "--router", "draft-only"), "is not a GGUF file")
    from reasoning.specs import ALIASES, alias_gguf

    real, _ = alias_gguf(ALIASES["smollm2-135m"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(real.read_bytes()[: 2 << 20])
    for spec in (str(cut), f"llamacpp:{cut}"):
        one_line(cli("solve", "2+2?", "--draft", spec, "--router", "draft-only"), "is truncated")


def test_api_refuses_nul_and_surrogates():
    from reasoning.prompts import check_question

    with pytest.raises(ConfigError, match="NUL character"):
        check_question("what is 2\x00+2?")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        check_question("caf\udcff")
    check_question("café 2+2?")  # real non-ASCII text is fine


def test_verdict_refuses_bad_questions_before_any_model_loads(cli):
    from reasoning.verdict import Verdict

    v = Verdict.__new__(Verdict)  # run() checks the question first: no model is needed to see it refused
    for q, msg in (("a\x00b", "NUL character"), ("caf\udcff", "not valid UTF-8"), ("  ", "empty")):
        with pytest.raises(ConfigError, match=msg):
            v.run(q)
    one_line(cli("verdict", os.fsdecode(b"caf\xff?"), "--experts", "smollm2-135m", "--samples", "2"), "not valid UTF-8")


@pytest.mark.slow
def test_server_answers_4xx_to_bad_questions(smol):
    from .test_serve import http, running

    solver = Solver("smollm2-135m", router="draft-only", max_steps=1, step_tokens=8, max_tokens=16)
    with running(solver) as server:
        url = server.url + "/v1/chat/completions"
        too_long = "too long for smollm2-135m: its prompt is"
        for content, msg in (("a\u0000b", "NUL"), ("caf\udcff", "UTF-8"), ("1234567890" * 3000, too_long)):
            body = json.dumps({"messages": [{"role": "user", "content": content}]}).encode()
            status, _, out = http(url, body)
            assert status == 400 and msg in out["error"]["message"], out
        status, _, out = http(url, {"messages": [{"role": "user", "content": "What is 2 + 2?"}]})
        assert status == 200  # the worker is not stuck
