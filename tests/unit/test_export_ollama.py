"""Chat templates translated for Ollama's Modelfile, and Llama 3 rope factors for GGUF."""

from __future__ import annotations

import numpy as np
import pytest

from tiny import embedded_tokenizer
from zerotune.models.templates import CHATML_TEMPLATE, DEEPSEEK_R1_TEMPLATE, DEEPSEEK_TEMPLATE

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye\n"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def _rebuild(p, messages, add_generation_prompt):
    """A conversation rendered from the pieces, the way the Ollama template walks it."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    text = p.head + (p.system_start + system[0] + p.system_end if system else p.default_system)
    for m in messages:
        if m["role"] == "user":
            text += p.user_start + m["content"] + p.user_end
        elif m["role"] == "assistant":
            text += p.assistant_start + m["content"] + p.assistant_end
    return text + (p.generation if add_generation_prompt else "")


@pytest.mark.parametrize("name", ["chatml", "smollm", "deepseek", "deepseek-r1"])
def test_turn_pieces_rebuild_the_jinja_rendering(tokenizer, name):
    from zerotune.export.ollama import turn_pieces

    template = {"chatml": CHATML_TEMPLATE, "smollm": tokenizer.chat_template, "deepseek": DEEPSEEK_TEMPLATE,
                "deepseek-r1": DEEPSEEK_R1_TEMPLATE}[name]
    pieces = turn_pieces(tokenizer, template)
    assert pieces is not None
    for messages in CONVERSATIONS:
        for gen in (False, True):
            want = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                 add_generation_prompt=gen)
            assert _rebuild(pieces, messages, gen) == want
    if name == "smollm":
        assert "named SmolLM" in pieces.default_system
    if name.startswith("deepseek"):
        assert pieces.head == tokenizer.bos_token and pieces.system_start == ""


def test_chatml_becomes_ollamas_chatml_template(tokenizer):
    from zerotune.export.ollama import ollama_template, turn_pieces

    text = ollama_template(turn_pieces(tokenizer, CHATML_TEMPLATE), runtime_adds_bos=False)
    assert text == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}{{ if not $last }}<|im_end|>\n'
        '{{ end }}{{ end }}{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}{{ end }}')


def test_bos_is_left_to_the_runtime_when_it_adds_one(tokenizer):
    from zerotune.export.ollama import ollama_template, turn_pieces

    pieces = turn_pieces(tokenizer, DEEPSEEK_TEMPLATE)
    assert ollama_template(pieces, runtime_adds_bos=True).startswith("{{ if .System }}")
    assert ollama_template(pieces, runtime_adds_bos=False).startswith(tokenizer.bos_token + "{{ if .System }}")


def test_untranslatable_template_leaves_template_to_ollama():
    from zerotune.export.ollama import modelfile_text

    tokenizer = embedded_tokenizer()
    tokenizer.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
    text = modelfile_text("model-q8_0.gguf", tokenizer, {"end_of_turn": "<|im_end|>"}, add_bos=False)
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "") and "FROM ./model-q8_0.gguf" in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_llama3_rope_factors_match_transformers():
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from zerotune.export.gguf import llama3_rope_factors

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=2048, num_attention_heads=32, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    default = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64))
    np.testing.assert_allclose(default.numpy() / llama3_rope_factors(config), scaled.numpy(), rtol=1e-5)
