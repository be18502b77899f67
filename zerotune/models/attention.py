"""Attention over packed rows, one example at a time.

transformers keeps packed examples apart by turning their position ids into a block-diagonal mask over
the whole row. With a mask, scaled_dot_product_attention cannot use its causal flash kernel: on CPU it
falls back to the math path, which computes (and keeps for backward) every head's full row x row
score matrix, though all but the diagonal blocks are masked out. For a 2048-token row of ten
examples that is ten times the attention work that counts and, on a small model, as many FLOPs as
all its linear layers together.

`packed` attention instead runs the causal kernel on each example's own slice of the row (the
segment bounds come from the packing, as the `packed_segments` keyword). Linear layers still see
the whole row at once. Without that keyword (generation, evaluation with padding) it is exactly
transformers' sdpa, mask included.
"""

from __future__ import annotations

import torch

PACKED = "zerotune_packed"
_REGISTERED = False


def segments(position_ids: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """(start, end) of each example in a packed (1, T) row: a new example starts where the position
    ids do not go up by one."""
    pos = position_ids[0].tolist()
    starts = [0] + [i for i in range(1, len(pos)) if pos[i] != pos[i - 1] + 1]
    return tuple(zip(starts, starts[1:] + [len(pos)]))


def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, packed_segments=None, **kwargs):
    """An attention function for transformers' AttentionInterface: query/key/value are
    (batch, heads, tokens, head_dim); returns ((batch, tokens, heads, head_dim), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_segments is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    gqa = {"enable_gqa": True} if groups > 1 else {}
    outs = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=e - s > 1,
        **gqa) for s, e in packed_segments]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `zerotune_packed` a valid attn_implementation (its masks are sdpa's)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED, packed_attention_forward)
    AttentionMaskInterface.register(PACKED, sdpa_mask)
    _REGISTERED = True


def use_packed_attention(model) -> bool:
    """Switch a model whose attention is sdpa or eager to packed attention (flash attention already
    splits packed rows by itself). Returns whether it switched."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    register()
    base.set_attn_implementation(PACKED)
    return base.config._attn_implementation == PACKED
