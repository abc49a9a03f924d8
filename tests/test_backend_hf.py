"""The transformers backend on the real bundled models: KV reuse is exact and incremental."""

import math

import pytest
import torch

from reasoning.prompts import Prompt

from .conftest import QUESTION


@pytest.mark.slow
def test_session_built_step_by_step_matches_one_shot_generation(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    first = s.generate(max_tokens=30, stop=["\n\n"])
    assert first.finish_reason == "stop" and first.text.endswith("\n\n")
    s.append("She has 5 + 7 = 12 balloons in all.\n\n")  # text from another model
    mark = s.n_tokens
    s.generate(max_tokens=12)
    s.rollback(mark)  # throw that step away
    s.append("After giving 3 away she has")
    got = s.generate(max_tokens=24)
    prefix = s.token_ids[: s.n_tokens - len(got.token_ids)]

    fresh = smol.open_session_ids(prefix).generate(max_tokens=24)
    assert fresh.token_ids == got.token_ids
    ref = smol.model.generate(torch.tensor([prefix]), max_new_tokens=24, do_sample=False)
    assert ref[0, len(prefix):].tolist()[: len(got.token_ids)] == got.token_ids
    assert fresh.logprobs == pytest.approx(got.logprobs, abs=1e-4)


@pytest.mark.slow
def test_each_call_runs_only_new_tokens(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    n_prompt = s.n_tokens
    g1 = s.generate(max_tokens=10)
    assert g1.usage.input_tokens == n_prompt and g1.usage.output_tokens == 10
    s.append(" and then 12 - 3 = 9")  # pending, fed by the next call
    added = s.n_tokens - n_prompt - 10
    g2 = s.generate(max_tokens=5)
    # the last sampled token of g1 and the appended text, nothing from the prompt again
    assert g2.usage.input_tokens == 1 + added
    # seconds split by the measured prefill, not pro rata by tokens: the prompt's forward pass is timed apart
    u = g1.usage
    assert 0 < u.prefill_seconds < u.seconds
    assert u.outputs(10).seconds == pytest.approx(u.seconds - u.prefill_seconds)
    assert u.outputs(4).seconds == pytest.approx((u.seconds - u.prefill_seconds) * 0.4)
    assert u.outputs(4).flops == pytest.approx(u.flops * 4 / (n_prompt + 10))


def test_stop_inside_a_token_leaves_session_holding_exact_text(smol):
    s = smol.open_session(Prompt.math(QUESTION, few_shot=0))
    g = s.generate(max_tokens=40, stop=[" "])
    assert g.finish_reason == "stop" and g.text.endswith(" ") and g.text.count(" ") == 1
    assert s.text == g.text


@pytest.mark.slow
def test_score_matches_generation_logprobs_and_appends(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    mark = s.n_tokens
    g = s.generate(max_tokens=15)
    s.rollback(mark)
    sc = s.score(g.text)
    assert sc.token_ids == g.token_ids
    assert sc.logprobs == pytest.approx(g.logprobs, abs=1e-4)
    assert s.n_tokens == mark + len(g.token_ids)
    assert all(lp <= 0 for lp in sc.logprobs)


def test_next_token_distribution_and_rollback_restore_state(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    s.append("The answer is ")
    mark = s.n_tokens
    before, _ = s.next_token_logprobs([str(d) for d in range(10)])
    assert all(v <= 0 for v in before.values())
    assert math.fsum(math.exp(v) for v in before.values()) <= 1.0 + 1e-6
    s.append("definitely not a digit")
    s.next_token_logprobs(["1"])
    s.rollback(mark)
    after, usage = s.next_token_logprobs([str(d) for d in range(10)])
    assert after == pytest.approx(before, abs=1e-4)
    assert usage.input_tokens == 0  # logits at the rollback point were kept: nothing runs again
    with pytest.raises(ValueError, match="not one"):
        s.next_token_logprobs(["12345678 apples"])
    with pytest.raises(ValueError, match="cannot roll back"):
        s.rollback(s.n_tokens + 1)


@pytest.mark.slow
def test_rollback_below_a_remembered_point_forgets_it(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    s.append("We know")
    base = s.n_tokens
    s.next_token_logprobs(["1"])
    s.append(" that 5 + 7 = 12")
    high = s.n_tokens
    s.generate(max_tokens=3)  # remembers logits at `high`
    s.rollback(base)
    s.append(" nothing about that at all, not even one little bit")  # different text, longer
    s.generate(max_tokens=3)
    s.rollback(high)
    got, _ = s.next_token_logprobs(["1", "2"])
    ref, _ = smol.open_session_ids(s.token_ids).next_token_logprobs(["1", "2"])
    assert got == pytest.approx(ref, abs=1e-4)


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smol):
    outs = []
    for _ in range(2):
        s = smol.open_session(Prompt.math(QUESTION))
        outs.append(s.generate(max_tokens=12, temperature=1.0, seed=7).token_ids)
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_gemma_sliding_window_layers_stay_exact_past_the_window(gemma):
    """Gemma-3 uses 512-token sliding-window layers; sessions keep full layers so they can be cropped
    anywhere, and must still give the model's own outputs beyond the window."""
    assert gemma.chat is False
    s = gemma.open_session(Prompt.math(QUESTION))
    s.append(" ".join(f"{i} apples." for i in range(150)) + "\n\n")
    assert s.n_tokens > 600
    mark = s.n_tokens
    s.generate(max_tokens=6)
    s.rollback(mark)
    got = s.generate(max_tokens=10)
    prefix = s.token_ids[: s.n_tokens - len(got.token_ids)]
    ref = gemma.model.generate(torch.tensor([prefix]), max_new_tokens=10, do_sample=False)
    assert ref[0, len(prefix):].tolist()[: len(got.token_ids)] == got.token_ids


@pytest.mark.slow
def test_a_local_gguf_file_and_a_local_directory_load_the_same_model(smol, tmp_path, monkeypatch):
    from reasoning.backends.hf import HFBackend
    from reasoning.specs import ALIASES, alias_gguf, cache_dir, parse_spec

    gguf, key = alias_gguf(ALIASES["smollm2-135m"])
    converted = cache_dir() / "hf" / key  # the alias's converted copy: a plain transformers directory
    monkeypatch.setenv("SPECSTEP_CACHE", str(tmp_path / "cache"))  # the .gguf converts into a fresh cache
    prompt = Prompt.math(QUESTION)
    want = smol.open_session(prompt).generate(max_tokens=8).token_ids
    for spec in (str(gguf), str(converted)):
        backend = HFBackend(parse_spec(spec))
        assert backend.chat  # the chat template travels with the tokenizer
        assert backend.open_session(prompt).generate(max_tokens=8).token_ids == want
    assert any((tmp_path / "cache" / "hf").iterdir())


def _script(backend):
    """Generations (with a stop string, a stop inside a token, a rollback, a one-token cap) and the state."""
    s = backend.open_session(Prompt.math(QUESTION))
    out = [s.generate(max_tokens=40, stop=["\n\n"])]
    mark = s.n_tokens
    out.append(s.generate(max_tokens=30, stop=[" "]))
    s.rollback(mark)
    s.append("After giving 3 away she has")
    out += [s.generate(max_tokens=25), s.generate(max_tokens=1)]
    return [(g.text, g.token_ids, g.finish_reason) for g in out], [g.logprobs for g in out], s.token_ids, out


def test_the_stop_search_after_each_token_finds_the_earliest_stop_ending_in_new_text():
    from reasoning.backends.kv import find_stop

    assert find_stop("a\n\n.", [".", "\n\n"], since=0) == (1, "\n\n")
    assert find_stop("ab\n\ncd", ["\n\n"], since=3) == (2, "\n\n")  # began before the new text
    assert find_stop("x. y\n\n", [".", "\n\n"], since=4) == (4, "\n\n")  # "." was searched already
    assert find_stop("abc", ["\n\n"], since=0) is None and find_stop("abc", [], since=0) is None


@pytest.mark.slow
def test_token_level_speculation_gives_exactly_the_greedy_output(smol):
    from reasoning.backends import load_backend

    # the testbed draft (SmolLM2's tokenizer) proposes; on a general question it is often wrong
    spec = load_backend("hf:smollm2-135m?assistant=testbed-draft&spec_tokens=3")
    plain_out, plain_lps, plain_ids, plain = _script(smol)
    spec_out, spec_lps, spec_ids, assisted = _script(spec)
    assert spec_out == plain_out and spec_ids == plain_ids
    for a, b in zip(plain_lps, spec_lps):
        assert a == pytest.approx(b, abs=1e-3)
    # rejected proposals made the target check more tokens than it kept; the assistant's FLOPs are counted
    assert sum(g.usage.input_tokens for g in assisted) > sum(g.usage.input_tokens for g in plain)
    assert all(g.usage.flops > p.usage.flops for g, p in zip(assisted, plain) if p.usage.output_tokens > 1)
    s = spec.open_session(Prompt.math(QUESTION))
    sampled = s.generate(max_tokens=8, temperature=0.7, seed=3)  # sampling: plain decoding, seeded as usual
    assert sampled.token_ids == smol.open_session(Prompt.math(QUESTION)).generate(
        max_tokens=8, temperature=0.7, seed=3).token_ids


@pytest.mark.slow
def test_an_assistant_with_another_tokenizer_is_one_clear_error(gemma):
    from reasoning.backends import load_backend
    from reasoning.errors import ConfigError

    spec = load_backend("hf:smollm2-135m?assistant=gemma3-270m")
    with pytest.raises(ConfigError, match="assistant 'gemma3-270m' must be a transformers model with the same"):
        spec.open_session(Prompt.math(QUESTION)).generate(max_tokens=4)


@pytest.mark.slow
def test_branch_logprobs_read_every_branch_in_one_pass_as_separate_passes_would(smol):
    s = smol.open_session(Prompt.math(QUESTION))
    s.generate(max_tokens=6)  # a pending token, fed by the next call
    ids, before = s.token_ids, s.next_token_logprobs(["1", " "])[0]
    pieces, suffix, cands = ["She has 5 + 7 = 12.\n\n", "Then 12 - 3 = 9.\n\n", "So 9."], "\nScore: ", ["1", "9"]
    got, usage = s.branch_logprobs(pieces, suffix, cands)
    assert s.token_ids == ids and s.next_token_logprobs(["1", " "])[0] == pytest.approx(before, abs=1e-4)
    mark = s.n_tokens
    for j, want in enumerate(got):
        for text in (*pieces[: j + 1], suffix):  # encoded apart, as the branches are
            s.append(text)
        assert s.next_token_logprobs(cands)[0] == pytest.approx(want, abs=2e-3)
        s.rollback(mark)
    assert s.can_branch and usage.input_tokens == sum(smol.count_tokens(p) + smol.count_tokens(suffix) for p in pieces)


@pytest.mark.slow
def test_a_stop_string_begun_before_a_switched_generation_ends_it_where_it_completes(smol):
    """Two-way handoff writes a step in parts: a delimiter begun by one model ("\\n") and completed by the
    other ("\\n") ends the step there (the switch's `lead` is the step's text so far)."""
    from reasoning.backends.base import Switch
    from reasoning.backends.kv import Decoding

    newline = smol.encode("\n")
    assert len(newline) == 1
    forced = torch.full((smol.n_vocab,), -1e4)
    forced[newline[0]] = 0.0  # the model's next token is "\n", whatever it would write
    for lead, ends in (("x = 3.\n", True), ("x = 3.", False)):
        s = smol.open_session(Prompt.math(QUESTION, few_shot=0))
        d = Decoding(s, max_tokens=4, stop=["\n\n"], temperature=0.0, seed=None, ignore_eos=False,
                     switch=Switch(20.0, True, False, lead=lead))
        assert (d.take(forced) is None) == ends
        if ends:
            g = d.result(0, 0.0, 0.0)
            assert (g.finish_reason, g.stop, g.text, g.token_ids) == ("stop", "\n\n", "\n", newline)
        s.close()
