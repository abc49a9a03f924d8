"""The PRM judge on tiny, randomly initialised but real transformers PRMs built here: a 2-class
token-classification head (Qwen2.5-Math-PRM style) and a 1-value head (value style)."""

import logging

import pytest
import torch

from judges import make_judge
from judges.prm import PRMJudge
from reasoning.errors import ConfigError, ModelSpecError
from reasoning.slots import LoopContext
from reasoning.types import Problem, Step

from .conftest import QUESTION

SEP = "<extra_0>"
STEPS = [
    "Lily starts with 5 + 7 = 12 balloons.",
    "She gives away 3 balloons, so 12 - 3 = 9 remain.",
    "The answer is 9.",
]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def prm_dirs(tmp_path_factory):
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForTokenClassification,
        Qwen2Config,
        Qwen2ForTokenClassification,
    )

    from reasoning.backends import load_backend

    root = tmp_path_factory.mktemp("prms")
    base = root / "tokenizer"
    load_backend("smollm2-135m").tokenizer.save_pretrained(base)
    dirs = {}

    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens([SEP], special_tokens=True)
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(Qwen2Config(vocab_size=len(tok), num_labels=2, **TINY))
    dirs["classification"] = root / "cls"
    model.save_pretrained(dirs["classification"])
    tok.save_pretrained(dirs["classification"])

    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(1)
    model = LlamaForTokenClassification(LlamaConfig(vocab_size=len(tok), num_labels=1, **TINY))
    dirs["value"] = root / "value"
    model.save_pretrained(dirs["value"])
    tok.save_pretrained(dirs["value"])
    return dirs


def route_ctx(steps: list[str]) -> LoopContext:
    return LoopContext(problem=Problem(question=QUESTION),
                       steps=[Step(index=i, text=t, author="draft") for i, t in enumerate(steps)],
                       step_index=len(steps))


@pytest.mark.parametrize("style", ["classification", "value"])
def test_scores_are_probabilities_deterministic_and_consistent(prm_dirs, style):
    judge = PRMJudge(model=str(prm_dirs[style]), style=style)
    all_scores = judge.score_steps(QUESTION, STEPS)
    assert len(all_scores) == len(STEPS)
    assert all(0.0 <= s <= 1.0 for s in all_scores)
    assert judge.score_steps(QUESTION, STEPS) == all_scores  # deterministic
    for k in range(len(STEPS)):  # each step's score depends only on the steps before it
        ctx = route_ctx(STEPS[:k])
        assert judge.score(ctx, STEPS[k]) == pytest.approx(all_scores[k], abs=1e-5)
    assert judge.score(route_ctx(STEPS[:-1]), STEPS[-1]) == judge.score(route_ctx(STEPS[:-1]), STEPS[-1])
    assert len(set(round(s, 6) for s in all_scores)) > 1  # the head really sees each step


def test_classification_score_is_softmax_at_each_separator(prm_dirs):
    judge = PRMJudge(model=str(prm_dirs["classification"]), style="classification")
    tok = judge.tokenizer
    sep_id = tok.convert_tokens_to_ids(SEP)
    assert judge.chat  # the tokenizer has a chat template, as Qwen2.5-Math-PRM expects
    ids, positions = judge.build_inputs(QUESTION, STEPS)
    assert [i for i, t in enumerate(ids) if t == sep_id] == positions
    text = tok.decode(ids)
    assert "<|im_start|>user" in text and QUESTION in text
    assert text.endswith(SEP.join(STEPS) + SEP)
    with torch.inference_mode():
        logits = judge.model(input_ids=torch.tensor([ids])).logits[0]
    assert logits.shape == (len(ids), 2)
    expected = torch.softmax(logits[positions], dim=-1)[:, 1].tolist()
    assert judge.score_steps(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)
    # positive_label picks the other class
    other = PRMJudge(model=str(prm_dirs["classification"]), style="classification", positive_label="0")
    assert other.model is judge.model  # loaded once
    assert other.score_steps(QUESTION, STEPS) == pytest.approx([1 - e for e in expected], abs=1e-6)


def test_value_score_is_sigmoid_at_the_separator_after_each_step(prm_dirs):
    judge = PRMJudge(model=str(prm_dirs["value"]), style="value")
    tok = judge.tokenizer
    assert not judge.chat
    ids, positions = judge.build_inputs(QUESTION, STEPS)
    assert positions[-1] == len(ids) - 1
    sep = judge.separator_ids
    for k, p in enumerate(positions):  # each position is the separator closing step k, the last one too
        assert ids[p + 1 - len(sep): p + 1] == sep
        assert tok.decode(ids[: p + 1 - len(sep)]).endswith(STEPS[k])
    assert tok.decode(ids).endswith("\n\n".join(STEPS) + "\n\n")
    with torch.inference_mode():
        values = judge.model(input_ids=torch.tensor([ids])).logits[0, :, 0]
    expected = torch.sigmoid(values[positions]).tolist()
    assert judge.score_steps(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)


def test_judge_reports_its_forward_pass(prm_dirs):
    judge = make_judge("prm", model=str(prm_dirs["value"]), style="value", max_tokens="2048", chat="false")
    assert judge.name == "prm" and isinstance(judge, PRMJudge)
    ctx = route_ctx(STEPS[:2])
    judge.score(ctx, STEPS[2])
    assert len(ctx.reported) == 1
    stage, usage = ctx.reported[0].stage, ctx.reported[0].usage
    ids, _ = judge.build_inputs(QUESTION, STEPS)
    assert stage == "judge" and usage.input_tokens == len(ids) > 0
    assert usage.output_tokens == 0 and usage.seconds > 0


def test_long_inputs_leave_out_the_oldest_steps(prm_dirs, caplog):
    full = PRMJudge(model=str(prm_dirs["classification"]), style="classification", chat="false")
    ids, positions = full.build_inputs(QUESTION, STEPS)
    cap = positions[1] + 1  # the first two steps fit, the third does not
    judge = PRMJudge(model=str(prm_dirs["classification"]), style="classification", chat="false",
                     max_tokens=str(cap))
    ctx = route_ctx([])
    with caplog.at_level(logging.WARNING, logger="judges.prm"):
        scores = judge.score_steps(QUESTION, STEPS, ctx=ctx)
    assert "max_tokens" in caplog.text
    assert scores[:2] == pytest.approx(full.score_steps(QUESTION, STEPS[:2]), abs=1e-6)
    # the third step is judged after step 2 only
    assert scores[2] == pytest.approx(full.score_text(QUESTION, STEPS[1:2], STEPS[2]), abs=1e-6)
    assert scores[2] == pytest.approx(judge.score(route_ctx(STEPS[:2]), STEPS[2]), abs=1e-6)
    first_step = positions[0] + 1 - len(full.head_ids(QUESTION))  # step 1 and its separator
    assert [r.usage.input_tokens for r in ctx.reported] == [cap, positions[2] + 1 - first_step]
    assert all(r.usage.input_tokens <= cap for r in ctx.reported)


def test_errors_name_the_bad_input(prm_dirs, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelSpecError, match="model directory not found: .*nope"):
        PRMJudge(model=str(missing), style="value")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="no model in directory .*empty"):
        PRMJudge(model=str(tmp_path / "empty"), style="value")
    with pytest.raises(ModelSpecError, match="style 'value' needs a head with 1 label, but .* has 2"):
        PRMJudge(model=str(prm_dirs["classification"]), style="value")
    with pytest.raises(ModelSpecError, match="style 'classification' needs a head with 2 labels, but .* has 1"):
        PRMJudge(model=str(prm_dirs["value"]), style="classification", step_separator="\\n\\n")
    with pytest.raises(ConfigError, match="bad option style='reward'"):
        PRMJudge(model=str(prm_dirs["value"]), style="reward")
    with pytest.raises(ConfigError, match="needs option style"):
        PRMJudge(model=str(prm_dirs["value"]))
    with pytest.raises(ConfigError, match="no option 'temperature'"):
        make_judge("prm", model=str(prm_dirs["value"]), style="value", temperature="0.5")
    with pytest.raises(ConfigError, match="bad option chat='maybe'"):
        PRMJudge(model=str(prm_dirs["value"]), style="value", chat="maybe")
    with pytest.raises(ConfigError, match="positive_label=2 but .* only 2 labels"):
        PRMJudge(model=str(prm_dirs["classification"]), style="classification", positive_label="2")
    # trust_remote_code loads through AutoModel: this checkpoint has no code of its own, so that is the
    # bare Qwen2Model, whose output (hidden states) is no 2-label head
    with pytest.raises(ModelSpecError, match="needs a head with 2 labels, but the output of model .* has 32"):
        PRMJudge(model=str(prm_dirs["classification"]), style="classification", trust_remote_code="true")
    # a classification PRM reads its score at one separator token
    with pytest.raises(ConfigError, match="step_separator 'x<y>z' is .* tokens"):
        PRMJudge(model=str(prm_dirs["classification"]), style="classification", step_separator="x<y>z")


def test_error_messages_are_one_line(prm_dirs, tmp_path):
    cases = [dict(model=str(tmp_path / "nope"), style="value"), dict(model=str(tmp_path), style="value"),
             dict(model=str(prm_dirs["classification"]), style="value"), dict(style="value")]
    for options in cases:
        with pytest.raises((ModelSpecError, ConfigError)) as e:
            PRMJudge(**options)
        assert "\n" not in str(e.value) and str(e.value).startswith("judge 'prm'")


@pytest.mark.slow
@pytest.mark.parametrize("style", ["classification", "value"])
def test_rsd_router_solves_with_a_prm_and_keeps_steps_scoring_at_least_tau(prm_dirs, style):
    from reasoning import solve

    opts = {"judge_options": {"model": str(prm_dirs[style]), "style": style}}
    sol = solve(QUESTION, router="rsd", threshold=0.5, max_steps=4, router_options=opts)
    judged = [s for s in sol.steps if s.decision is not None]
    assert judged and sol.costs.judge.calls == len(judged)
    for s in judged:
        assert 0.0 <= s.score <= 1.0
        assert (s.decision == "keep") == (s.score >= 0.5)
