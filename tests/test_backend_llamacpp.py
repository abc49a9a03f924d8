"""The llama.cpp backend on the real bundled GGUF files."""

import pytest

from reasoning.prompts import Prompt

from .conftest import QUESTION

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def lsmol():
    from reasoning.backends import load_backend

    return load_backend("llamacpp:smollm2-135m")


@pytest.fixture(scope="module")
def lgemma():
    from reasoning.backends import load_backend

    return load_backend("llamacpp:gemma3-270m")


def test_prompts_tokenize_as_in_transformers(lsmol, lgemma, smol, gemma):
    p = Prompt.math(QUESTION)
    assert lsmol.chat and not lgemma.chat
    assert lsmol.render(p) == smol.render(p) and lgemma.render(p) == gemma.render(p)
    assert lsmol.turn_markers() == smol.turn_markers()
    assert lsmol.open_session(p).token_ids == smol.open_session(p).token_ids
    assert lgemma.open_session(p).token_ids == gemma.open_session(p).token_ids  # BOS included


def test_session_built_step_by_step_matches_one_shot_generation(lsmol):
    s = lsmol.open_session(Prompt.math(QUESTION))
    n_prompt = s.n_tokens
    first = s.generate(max_tokens=30, stop=["\n\n"])
    assert first.finish_reason == "stop" and first.text.endswith("\n\n") and s.text == first.text
    assert first.usage.input_tokens == n_prompt
    s.append("She has 5 + 7 = 12 balloons in all.\n\n")
    mark = s.n_tokens
    s.generate(max_tokens=12)
    s.rollback(mark)
    s.append("After giving 3 away she has")
    got = s.generate(max_tokens=24)
    prefix = s.token_ids[: s.n_tokens - len(got.token_ids)]
    # llama.cpp is not bit-exact between a batched prefill and token-by-token decoding (seen: 0.1-0.26
    # in a logprob), so compare distributions: the session's tokens scored from a fresh one-shot prefill
    fresh = lsmol.open_session_ids(prefix).score(lsmol.decode(got.token_ids))
    assert fresh.token_ids == got.token_ids
    assert fresh.logprobs == pytest.approx(got.logprobs, abs=0.3)
    wrong = lsmol.open_session_ids(prefix[:-3]).score(lsmol.decode(got.token_ids))  # a broken prefix differs
    assert max(abs(a - b) for a, b in zip(wrong.logprobs, got.logprobs)) > 0.5


def test_score_next_token_and_rollback(lgemma):
    s = lgemma.open_session(Prompt.math(QUESTION))
    mark = s.n_tokens
    g = s.generate(max_tokens=15)
    s.rollback(mark)
    sc = s.score(g.text)
    assert sc.token_ids == g.token_ids
    assert sc.logprobs == pytest.approx(g.logprobs, abs=0.3)
    s.append("The answer is ")
    at = s.n_tokens
    before, _ = s.next_token_logprobs([str(d) for d in range(10)])
    s.append("not a digit")
    s.next_token_logprobs(["1"])
    s.rollback(at)
    after, usage = s.next_token_logprobs([str(d) for d in range(10)])
    assert after == pytest.approx(before, abs=1e-3)
    assert usage.input_tokens == 0


def test_sessions_sharing_the_context_stay_exact_and_count_what_they_refeed(lsmol):
    p = Prompt.math(QUESTION)
    alone = lsmol.open_session(p)
    a1 = alone.generate(max_tokens=8)
    a2 = alone.generate(max_tokens=8)
    x, y = lsmol.open_session(p), lsmol.open_session(Prompt.math("What is 12 times 12?"))
    x1 = x.generate(max_tokens=8)
    y.generate(max_tokens=8)  # takes over the one sequence
    x2 = x.generate(max_tokens=8)  # must re-feed its own tokens, then continue exactly
    assert (x1.token_ids, x2.token_ids) == (a1.token_ids, a2.token_ids)
    # x re-feeds its tokens after the prefix both prompts share (system text and examples)
    common = next(i for i, (u, v) in enumerate(zip(x.token_ids, y.token_ids)) if u != v)
    held = x.n_tokens - len(x2.token_ids) - 1  # the last token of x1 was pending anyway
    assert a2.usage.input_tokens == 1
    assert x2.usage.input_tokens == 1 + held - common > 10


def test_sessions_say_they_read_judge_branches_one_at_a_time(lsmol):
    s = lsmol.open_session(Prompt.math(QUESTION))
    assert s.can_branch is False  # the judge appends, reads and rolls back each step instead
    with pytest.raises(NotImplementedError, match="one branch at a time"):
        s.branch_logprobs(["a"], "b", ["1"])


def test_context_overflow_is_one_clear_error(lsmol):
    from reasoning.errors import ModelSpecError

    s = lsmol.open_session(Prompt.math(QUESTION))
    s.append("apple " * (lsmol.n_ctx + 10))
    with pytest.raises(ModelSpecError, match="exceeds n_ctx"):
        s.generate(max_tokens=2)


def test_specs_and_options(tmp_path):
    from reasoning.backends import load_backend
    from reasoning.errors import ModelSpecError

    notgguf = tmp_path / "model.bin"
    notgguf.write_text("x")
    with pytest.raises(ModelSpecError, match="needs a .gguf file"):
        load_backend(f"llamacpp:{notgguf}")
    with pytest.raises(ModelSpecError, match="n_ctx must be an integer"):
        load_backend("llamacpp:smollm2-135m?n_ctx=big")
    with pytest.raises(ModelSpecError, match="no chat template"):
        load_backend("llamacpp:gemma3-270m?chat=1")


def test_a_full_solve_runs_both_models_on_llama_cpp(lsmol, lgemma):
    from reasoning.answers import last_boxed
    from reasoning.api import Solver

    sol = Solver("llamacpp:smollm2-135m", "llamacpp:gemma3-270m", router="specreason", threshold=0.5,
                 max_steps=4, step_tokens=48).solve(QUESTION)
    c = sol.costs
    drafted = sum(1 for s in sol.steps if s.decision is not None)
    assert drafted >= 1 and c.draft.calls == drafted
    assert c.judge.input_tokens > 0
    escalated = sum(1 for s in sol.steps if s.decision == "escalate")
    assert c.discarded.calls == escalated and c.target.calls >= escalated
    last = sol.steps[-1]  # the solution's own answer step ends it (no answer forced)
    assert (sol.stop_reason, last.kind, sol.forced_answer, sol.answer_rule) == ("answer", "answer", False, "boxed")
    assert sol.answer is not None and sol.answer == last_boxed(last.text)
