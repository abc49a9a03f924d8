"""Presets and config files for thinking models: layering, the options they set (a step cap of 0, no
system prompt, the repeat rule on consecutive steps, the budget cut to the context), and bad input."""

import logging

import pytest

from reasoning.controller import repeats
from reasoning.errors import ConfigError
from reasoning.options import Limits, make_limits
from reasoning.presets import layered, preset_names, read_config, read_preset
from reasoning.prompts import MATH_SYSTEM, Prompt


def test_every_shipped_preset_is_valid_and_the_thinking_ones_sample_as_their_model_cards_ask():
    assert preset_names() == ["instruct", "qwen3-thinking", "qwq", "r1-distill"]
    for name in preset_names():
        make_limits(**read_preset(name))
    r1 = Limits(**read_preset("r1-distill"))
    assert (r1.temperature, r1.top_p, r1.max_tokens, r1.max_steps, r1.few_shot) == (0.6, 0.95, 32768, 0, 0)
    assert not r1.system_prompt and r1.think and r1.repeat == "consecutive"
    assert Limits(**read_preset("qwen3-thinking")).top_k == 20 and Limits(**read_preset("qwq")).top_k == 40
    assert Limits(**read_preset("instruct")).temperature == 0.0


def test_options_layer_defaults_then_preset_then_config_then_flags(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text('preset = "qwq"\ntemperature = 0.3\nmax_tokens = 2048\n')
    assert read_config(cfg)["top_k"] == 40  # from the preset it names
    got = layered({"max_tokens": 512, "temperature": 0.0, "few_shot": 2}, "r1-distill", cfg, {"max_tokens": 1000})
    assert got["max_tokens"] == 1000  # the flag given
    assert got["temperature"] == 0.3  # the config file over its preset and over --preset
    assert got["top_k"] == 40 and got["few_shot"] == 0  # the config's preset over --preset's and the defaults


@pytest.mark.parametrize("text,msg", [
    ('temperatur = 1\n', "unknown option 'temperatur'"),
    ('top_p = 2\n', "bad value for top_p: Input should be less than or equal to 1"),
    ('max_steps = "many"\n', "bad value for max_steps"),
    ('top_p = [\n', "is not valid TOML"),
    ('preset = "r2"\n', "unknown preset 'r2' (presets: instruct, qwen3-thinking, qwq, r1-distill)"),
])
def test_a_bad_config_file_is_one_line_before_any_model_loads(tmp_path, cli, text, msg):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        read_config(path)
    for command in (["solve", "--example"], ["eval", "--dataset", "synthetic", "--policies", "target-only", "--out",
                                             str(tmp_path / "run")], ["serve"]):
        r = cli(*command, "--config", path, "--draft", "no-such-model", "--target", "no-such-model")
        assert r.returncode == 2 and msg in r.error_line()  # a model name is only read after the options
    r = cli("solve", "--example", "--preset", "r1", "--draft", "no-such-model")
    assert r.returncode == 2 and "unknown preset 'r1'" in r.error_line()


def test_the_instruction_can_follow_the_question_in_the_users_turn():
    msgs = Prompt.math("What is 2 + 3?", 1, in_user=True).messages()
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[-1]["content"] == f"What is 2 + 3?\n\n{MATH_SYSTEM}" and msgs[0]["content"].endswith(MATH_SYSTEM)
    assert Prompt.math("What is 2 + 3?", 0).messages()[0] == {"role": "system", "content": MATH_SYSTEM}


def test_the_repeat_rule_looks_at_any_earlier_step_or_the_one_before_only():
    wait = ["Wait,", "Let me check 2 + 3 = 5.", "Wait,"]
    assert repeats(wait, "any") and not repeats(wait, "consecutive")
    assert repeats(["a", "Wait,", "Wait, "], "consecutive") and not repeats(["Wait,"], "any")


@pytest.mark.slow
def test_a_preset_on_the_command_line_reaches_the_solve_and_the_flags_given_win(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('preset = "instruct"\nmax_tokens = 64\nrepeat = "consecutive"\n')
    r = cli("solve", "--example", "--draft", "testbed-draft", "--target", "testbed-target", "--router", "target-only",
            "--config", cfg, "--max-steps", "1", "--no-system-prompt", "--json")
    assert r.returncode == 0, r.stderr
    from reasoning.types import Solution

    sol = Solution.model_validate_json(r.stdout)
    c = sol.config
    assert (c.max_steps, c.max_tokens, c.step_tokens, c.few_shot) == (1, 64, 64, 2)  # flag, config, capped, preset
    assert (c.repeat, c.system_prompt, c.temperature) == ("consecutive", False, 0.0)
    assert len(sol.steps) <= 2 and sol.stop_reason in ("max_steps", "answer", "eos")


@pytest.mark.slow
def test_a_thinking_budget_past_the_context_is_cut_to_it_and_no_step_cap_applies(smol, caplog):
    from reasoning.controller import CONTEXT_MARGIN, Controller
    from reasoning.types import Problem, SolveConfig
    from routers import make_router

    def run(**over):
        limits = make_limits(**(read_preset("r1-distill") | {"temperature": 0.0, "step_tokens": 8} | over))
        config = SolveConfig(draft="smollm2-135m", target="smollm2-135m", router="target-only",
                             max_steps=limits.max_steps, max_tokens=limits.max_tokens, step_tokens=8, delimiter="\n\n",
                             temperature=0.0)
        ctl = Controller(None, smol, make_router("target-only"), limits, config)
        return ctl, ctl.run(Problem(question="What is 2 + 3?"))

    with caplog.at_level(logging.WARNING, logger="reasoning.controller"):
        ctl, sol = run(max_steps=2)  # the r1-distill budget (32k tokens) on SmolLM2 (an 8k context)
    prompt = smol.count_tokens(smol.render(ctl.sessions.target.prompt))
    assert smol.context_length == 8192 and ctl.limits.max_tokens == 32768
    assert ctl._budget == 8192 - prompt - ctl.limits.forced_answer_tokens - CONTEXT_MARGIN
    assert f"the budget is {ctl._budget} tokens" in caplog.text
    _, sol = run(max_tokens=40)  # max_steps 0: no step cap, the token budget (or an answer) ends the solve
    assert sol.config.max_steps == 0 and sol.stop_reason != "max_steps"
    assert sum(s.tokens for s in sol.steps if s.kind != "forced_answer") >= 40 or sol.stop_reason != "token_budget"
