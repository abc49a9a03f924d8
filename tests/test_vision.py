"""The vision-language backend on a tiny randomly initialised Qwen2-VL (the real architecture and processor)
built here, and image loading. Sessions must match one-shot forwards and HF generate exactly."""

import base64
import io
import json
import re

import pytest
import torch
from PIL import Image

from reasoning.errors import ConfigError
from reasoning.images import data_url, image_ref, load_images
from reasoning.prompts import Prompt

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
# Qwen-style: one <|vision_start|><|image_pad|><|vision_end|> per image part; the processor expands the pad.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MERGE = 4  # image tokens = grid patches / spatial_merge_size**2
QUESTION = "What colour is the shape?"


def _build(out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # byte-level BPE without merges: one token per byte, so any text round-trips
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                                merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         initializer_range=0.1),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.1),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    with torch.no_grad():
        # Logit 0 for special tokens and for bytes that are not printable ASCII: greedy decoding (always a
        # positive logit) then writes text that decodes and re-encodes to the same tokens.
        printable = {tok.encode(chr(c))[0] for c in range(32, 127)} | set(tok.encode("\n"))
        model.lm_head.weight[[i for i in range(len(tok)) if i not in printable]] = 0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28 * 16).save_pretrained(out)
    pre = json.loads((out / "preprocessor_config.json").read_text())
    (out / "preprocessor_config.json").write_text(json.dumps({**pre, "processor_class": "Qwen2VLProcessor"}))
    (out / "chat_template.jinja").write_text(TEMPLATE)
    return out


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.fixture(scope="session")
def vlm(vlm_dir):
    from reasoning.backends import load_backend

    return load_backend(str(vlm_dir))


def _image(w, h, seed):
    g = torch.Generator().manual_seed(seed)
    return Image.frombytes("RGB", (w, h), torch.randint(0, 256, (w * h * 3,), generator=g,
                                                        dtype=torch.uint8).numpy().tobytes())


RED = Image.new("RGB", (56, 56), (220, 20, 20))  # 4x4 patches -> 4 image tokens
NOISE = _image(112, 56, 1)  # 4x8 patches -> 8 image tokens; rope delta differs from RED's


def _prompt(*images, question=QUESTION):
    return Prompt(question, "Answer briefly.", images=tuple(images))


def _one_shot_logprobs(vlm, session, prompt):
    """log-softmax over the session's whole token list in one forward without a cache (HF's own
    positions from get_rope_index over the full sequence); row i predicts token i + 1."""
    ids = session.token_ids
    inputs = {"input_ids": torch.tensor([ids])}
    if prompt.images:
        enc = vlm.processor(text=[vlm.render(prompt)], images=list(prompt.images), return_tensors="pt",
                            add_special_tokens=False)
        assert enc["input_ids"][0].tolist() == ids[: session.n_prompt]
        types = torch.zeros(1, len(ids), dtype=enc["mm_token_type_ids"].dtype)
        types[:, : session.n_prompt] = enc["mm_token_type_ids"]
        inputs.update(pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"], mm_token_type_ids=types)
    with torch.inference_mode():
        return torch.log_softmax(vlm.model(**inputs, use_cache=False).logits[0].float(), dim=-1)


# --- loading and prompts -------------------------------------------------------------------------
def test_load_backend_picks_the_vision_backend(vlm, vlm_dir):
    from reasoning.backends.hf_vision import HFVisionBackend, wants_vision
    from reasoning.specs import parse_spec

    assert isinstance(vlm, HFVisionBackend) and vlm.chat
    assert wants_vision(parse_spec(str(vlm_dir)))
    assert not wants_vision(parse_spec(f"{vlm_dir}?vision=0"))
    assert not wants_vision(parse_spec("smollm2-135m"))
    assert vlm.tokenizer.convert_tokens_to_ids("<|im_end|>") in vlm.eos_ids
    assert vlm.turn_markers() == ("<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_puts_images_in_the_last_user_turn():
    p = Prompt("How many?", "sys", (("q1", "a1"),), images=[RED, NOISE])
    assert isinstance(p.images, tuple) and len(p.images) == 2
    msgs = p.messages()
    assert msgs[1] == {"role": "user", "content": "q1"}  # examples stay text
    assert msgs[-1] == {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                    {"type": "text", "text": "How many?"}]}
    text_only = Prompt("How many?", "sys")
    assert text_only.messages()[-1] == {"role": "user", "content": "How many?"}
    assert hash(p) == hash(Prompt("How many?", "sys", (("q1", "a1"),), images=(RED, NOISE)))
    assert p != Prompt("How many?", "sys", (("q1", "a1"),), images=(RED,))
    with pytest.raises(ConfigError, match="no chat template; images need a vision-language model"):
        p.plain()


def test_plain_format_refuses_images(vlm_dir):
    from reasoning.backends import load_backend

    plain = load_backend(f"{vlm_dir}?chat=0")
    with pytest.raises(ConfigError, match=r"model .*chat=0 has no chat template"):
        plain.open_session(_prompt(RED))


def test_processor_expands_image_tokens_by_size(vlm):
    pad = vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    base = vlm.open_session(_prompt()).n_prompt
    counts = []
    assert vlm.render(_prompt(RED)).count("<|image_pad|>") == 1
    for size in (28, 56, 112, 400):  # 400x400 is resized down to max_pixels: 16 tokens
        s = vlm.open_session(_prompt(Image.new("RGB", (size, size), (0, 90, 200))))
        counts.append(s.token_ids.count(pad))
        assert s.n_prompt == base + 2 + counts[-1]  # + <|vision_start|> <|vision_end|>
    assert counts == [1, 4, 16, 16]


def test_images_change_the_next_token_distribution(vlm):
    def dist(*images):
        s = vlm.open_session(_prompt(*images))
        logits, _ = s._next_logits()
        return torch.log_softmax(logits, -1)

    red, noise, text = dist(RED), dist(NOISE), dist()
    assert torch.equal(red, dist(RED))
    assert (red - noise).abs().max() > 1e-3 and (red - text).abs().max() > 1e-3
    assert (dist(RED, NOISE) - dist(NOISE, RED)).abs().max() > 1e-3  # order matters


# --- sessions ------------------------------------------------------------------------------------
def test_generation_is_reproducible_and_matches_hf_generate(vlm):
    p = _prompt(NOISE)
    got = vlm.open_session(p).generate(max_tokens=16)
    again = vlm.open_session(p).generate(max_tokens=16)
    assert got.finish_reason == "length" and got.token_ids == again.token_ids and got.logprobs == again.logprobs
    enc = vlm.processor(text=[vlm.render(p)], images=[NOISE], return_tensors="pt", add_special_tokens=False)
    ref = vlm.model.generate(**enc, max_new_tokens=16, do_sample=False)
    assert ref[0, enc["input_ids"].shape[1]:].tolist() == got.token_ids


def test_incremental_step_matches_one_shot_forward(vlm):
    p = _prompt(NOISE)
    s = vlm.open_session(p)
    first = s.generate(max_tokens=8)
    s.append("\n\nSo the shape is")
    mark = s.n_tokens
    s.generate(max_tokens=6)
    s.rollback(mark)  # throw that step away
    s.append(" red or")
    got = s.generate(max_tokens=8)
    lp = _one_shot_logprobs(vlm, s, p)
    ids = s.token_ids
    start = len(ids) - len(got.token_ids)
    rows = lp[start - 1: len(ids) - 1]
    assert rows.argmax(-1).tolist() == got.token_ids
    assert rows.gather(1, torch.tensor(got.token_ids)[:, None])[:, 0].tolist() == pytest.approx(got.logprobs, abs=1e-4)
    n = s.n_prompt
    assert lp[n - 1: n - 1 + 8].argmax(-1).tolist() == first.token_ids


def test_score_after_rollback_is_repeatable_and_exact(vlm):
    p = _prompt(RED)
    s = vlm.open_session(p)
    s.generate(max_tokens=10)
    s.rollback(s.n_prompt)
    s.append("The final answer is \\boxed{")
    mark = s.n_tokens
    seen = {}
    for cand in ["red", "12", "red", "blue", "12", "red"]:
        sc = s.score(cand)
        assert s.n_tokens == mark + len(sc.token_ids) and all(x <= 0 for x in sc.logprobs)
        if cand in seen:
            assert sc.token_ids == seen[cand].token_ids
            assert sc.logprobs == pytest.approx(seen[cand].logprobs, abs=1e-5)
        seen.setdefault(cand, sc)
        s.rollback(mark)
        assert s.n_tokens == mark
    # a fresh session's first forward holds the prompt, its pixels and the appended text
    fresh = vlm.open_session(p)
    fresh.append("The final answer is \\boxed{")
    assert fresh.n_tokens == mark
    assert fresh.score("red").logprobs == pytest.approx(seen["red"].logprobs, abs=1e-5)
    fresh = vlm.open_session(p)
    fresh.append("The final answer is \\boxed{")
    g = fresh.generate(max_tokens=3)
    fresh.rollback(mark)
    assert fresh.score(g.text).logprobs == pytest.approx(g.logprobs, abs=1e-5)
    s.score("blue")
    lp = _one_shot_logprobs(vlm, s, p)
    ids = s.token_ids
    want = [float(lp[mark - 1 + i, ids[mark + i]]) for i in range(len(ids) - mark)]
    assert seen["blue"].logprobs == pytest.approx(want, abs=1e-4)


def test_rollback_into_an_image_prompt_is_refused(vlm):
    s = vlm.open_session(_prompt(RED))
    s.generate(max_tokens=4)
    with pytest.raises(ValueError, match="prompt with its images"):
        s.rollback(s.n_prompt - 1)
    s.rollback(s.n_prompt)  # the prompt's own logits are kept: no forward pass
    _, usage = s.next_token_logprobs(["a"])
    assert usage.input_tokens == 0
    t = vlm.open_session(_prompt())  # text-only sessions may roll back anywhere, as in HFBackend
    prompt_ids = t.token_ids
    g = t.generate(max_tokens=4)
    t.rollback(t.n_prompt - 3)
    t.append_tokens(prompt_ids[-3:])
    assert t.generate(max_tokens=4).token_ids == g.token_ids


def test_interleaved_sessions_on_different_images_match_solo_runs(vlm):
    """Each session keeps its own rope delta: interleaving (and HF generate in between, which sets the
    model's shared rope_deltas) changes nothing."""
    def steps(s):
        yield s.generate(max_tokens=5)
        s.append(" and")
        yield s.score(" then")
        yield s.generate(max_tokens=5)

    solo = {name: list(steps(vlm.open_session(_prompt(im)))) for name, im in (("red", RED), ("noise", NOISE))}
    a, b = steps(vlm.open_session(_prompt(RED))), steps(vlm.open_session(_prompt(NOISE)))
    mixed = {"red": [], "noise": []}
    other = _image(84, 28, 2)
    enc = vlm.processor(text=[vlm.render(_prompt(other))], images=[other], return_tensors="pt",
                        add_special_tokens=False)
    for _ in range(3):
        mixed["red"].append(next(a))
        vlm.model.generate(**enc, max_new_tokens=2, do_sample=False)
        mixed["noise"].append(next(b))
    for name in solo:
        for x, y in zip(solo[name], mixed[name]):
            assert x.token_ids == y.token_ids
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


def test_text_only_prompt_on_the_vision_backend(vlm):
    vlm.open_session(_prompt(NOISE)).generate(max_tokens=2)  # leaves a stale rope delta on the model
    p = _prompt()
    s = vlm.open_session(p)
    got = s.generate(max_tokens=12)
    ids = s.token_ids[: s.n_prompt]
    assert ids == vlm.tokenizer(vlm.render(p), add_special_tokens=False)["input_ids"]
    ref = vlm.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    assert ref[0, len(ids):].tolist() == got.token_ids
    assert vlm.open_session_ids(ids).generate(max_tokens=12).token_ids == got.token_ids


# --- image loading -------------------------------------------------------------------------------
def _png(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_load_images_accepts_paths_bytes_data_urls_and_pil(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png(RED))
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    url = "data:image/png;base64," + base64.b64encode(_png(RED)).decode()
    out = load_images([str(path), path, _png(RED), url, f"file://{path}", rgba])
    assert all(im.mode == "RGB" for im in out)
    assert [im.size for im in out[:5]] == [(56, 56)] * 5
    assert all(im.tobytes() == RED.tobytes() for im in out[:5])
    assert out[5].getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert len(load_images(str(path))) == 1  # a single item is not iterated character by character
    assert image_ref(str(path)) == str(path)
    assert image_ref(_png(RED)) == image_ref(url) and image_ref(_png(RED)).startswith("bytes:")
    assert image_ref(RED).startswith("pil:56x56:")
    assert load_images([data_url(NOISE)])[0].tobytes() == NOISE.tobytes()  # lossless PNG data URL


@pytest.mark.parametrize("case, problem", [
    ("missing", "file not found"),
    ("directory", "is a directory"),
    ("text", "not an image"),
    ("pixels", "too large: 56x56 = 3136 pixels > max_pixels=1000"),
    ("bytes", "too large: .* bytes > max_bytes=100"),
    ("http", "download it first and pass the file or bytes"),
    ("https", "download it first"),
    ("base64", "bad base64"),
    ("not_image_url", "data URL is text/plain, not an image"),
    ("truncated", "corrupt or truncated|cannot open|not an image"),
    ("empty", "empty bytes"),
    ("type", "unsupported item"),
])
def test_bad_images_raise_one_line_config_errors(tmp_path, case, problem):
    png, tiny = _png(RED), _png(Image.new("RGB", (1, 1)))
    (tmp_path / "notes.png").write_text("just some text, renamed")
    (tmp_path / "big.png").write_bytes(png)
    item, name, kw = {
        "missing": (str(tmp_path / "nope.png"), "nope.png", {}),
        "directory": (str(tmp_path), str(tmp_path), {}),
        "text": (str(tmp_path / "notes.png"), "notes.png", {}),
        "pixels": (str(tmp_path / "big.png"), "big.png", {"max_pixels": 1000}),
        "bytes": (str(tmp_path / "big.png"), "big.png", {"max_bytes": 100}),
        "http": ("http://example.com/cat.png", "http://example.com/cat.png", {}),
        "https": ("HTTPS://example.com/cat.png", "example.com/cat.png", {}),
        "base64": ("data:image/png;base64,@@not base64@@", "data:image/png;base64", {}),
        "not_image_url": ("data:text/plain;base64,aGk=", "data:text/plain", {}),
        "truncated": (png[: len(png) // 2], "bytes:", {}),
        "empty": (b"", "bytes:", {}),
        "type": (12345, "<int>", {}),
    }[case]
    with pytest.raises(ConfigError) as e:
        load_images([tiny, item], **kw)  # a good first item does not hide the bad one
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("image ") and name in msg
    assert re.search(problem, msg), msg


def test_cli_verdict_answers_about_an_image_with_vision_experts(cli, vlm_dir, tmp_path):
    img = tmp_path / "red.png"
    RED.save(img)
    r = cli("verdict", QUESTION, "--image", str(img), "--experts", f"{vlm_dir},{vlm_dir},{vlm_dir}",
            "--verdict-model", str(vlm_dir), "-m", "2", "--max-tokens", "8", "--path-tokens", "16", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout)
    assert rec["images"] == [str(img)] and len(rec["candidates"]) == 3
    assert rec["costs"]["candidates"]["calls"] == 3 and len(rec["selected"]) <= 2
