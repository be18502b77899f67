"""LoRA target modules per architecture.

Presets resolve against the linear layers the model really has, so DeepSeek-V2/V3 (multi-head
latent attention: q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj, no q_proj/v_proj) gets
its own attention set, and a misspelt module name fails with the list of names that exist.
"""

from __future__ import annotations

import torch

ATTENTION_SETS = (
    ("q_proj", "v_proj"),  # Llama, Qwen2, Mistral, DeepSeek-LLM: the seed's default
    ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),  # DeepSeek-V2/V3 MLA
    ("q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),  # DeepSeek-V2-Lite: no q_lora_rank
    ("c_attn",),  # GPT-2 style fused attention
    ("query_key_value",),  # GPT-NeoX, Falcon
)


class TargetError(ValueError):
    """Requested LoRA targets do not exist in the model."""


def linear_names(model: torch.nn.Module) -> list[str]:
    """Short names of the model's linear layers (the last path component), output head excluded."""
    out_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not out_head:
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_targets(model: torch.nn.Module, targets: str | list[str]) -> list[str]:
    """Module names for peft's LoraConfig(target_modules=...).

    Args:
        model: the base model.
        targets: "attention", "all-linear", or a list of module names.
    Returns:
        A sorted list of short module names present in the model.
    """
    present = linear_names(model)
    if targets == "all-linear":
        return present
    if targets == "attention":
        for group in ATTENTION_SETS:
            if all(name in present for name in group):
                return list(group)
        raise TargetError(f"no known attention layers in this model; its linear layers: {', '.join(present)}")
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in present]
    if unknown:
        raise TargetError(
            f"LoRA target(s) {', '.join(unknown)} not in this model; its linear layers: {', '.join(present)}"
        )
    return sorted(targets)
