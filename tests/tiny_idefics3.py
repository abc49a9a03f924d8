"""A tiny randomly-initialised Idefics3 (a real vision-language architecture whose vLLM CPU model and
processor need no torchvision), built and saved by the tests that use it."""

import warnings
from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>"]
TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}: {{ message['content'] }}{% else %}:"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_idefics3(out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )

    with warnings.catch_warnings():  # without torchvision, transformers picks the PIL image processor
        warnings.simplefilter("ignore")
        from transformers import Idefics3ImageProcessor
    out.mkdir(parents=True, exist_ok=True)
    # byte-level BPE without merges: one token per byte
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                  additional_special_tokens=SPECIALS[2:])
    tok.chat_template = TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Idefics3Config(
        # head_dim 64: vLLM's CPU attention does not take 16
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, eos_token_id=ids["<end_of_utterance>"],
                         pad_token_id=ids["<|endoftext|>"], bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        scale_factor=2, image_token_id=ids["<image>"], pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    ip = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                max_image_size={"longest_edge": 32})
    Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=TEMPLATE).save_pretrained(out)
    return out
