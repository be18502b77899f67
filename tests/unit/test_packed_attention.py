"""Packed attention (attention per example of a packed row) against transformers' own masked path."""

import pytest
import torch

from tiny import ROWS, tiny_model
from zerotune.data.packing import pack
from zerotune.data.tokenize import tokenize_rows
from zerotune.models.attention import PACKED, segments, use_packed_attention
from zerotune.models.templates import resolve_format
from zerotune.train import loop


def test_segments_follow_the_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert segments(pos) == ((0, 3), (3, 5), (5, 6), (6, 10))
    assert segments(torch.arange(7).unsqueeze(0)) == ((0, 7),)


def _loss_and_grads(model, row):
    model.zero_grad(set_to_none=True)
    loss = loop.row_loss(model, row, torch.device("cpu"))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["llama", "qwen2", "deepseek_v3"])
def test_packed_attention_matches_the_masked_path(kind):
    """Same loss and gradients as sdpa under transformers' block-diagonal mask, and the same as each
    example alone: no token attends across an example boundary either way."""
    model, tokenizer = tiny_model(kind)
    model.train()
    examples = tokenize_rows(ROWS, tokenizer, resolve_format(tokenizer, "auto"), 512).examples
    row = pack(examples)
    assert len(segments(row.position_ids)) == len(examples) > 1
    masked_loss, masked_grads = _loss_and_grads(model, row)
    assert use_packed_attention(model)
    assert model.config._attn_implementation == PACKED
    packed_loss, packed_grads = _loss_and_grads(model, row)
    alone = sum(float(loop.row_loss(model, pack([e]), torch.device("cpu"))) for e in examples)
    assert torch.allclose(packed_loss, masked_loss, rtol=1e-5, atol=1e-5)
    assert abs(float(packed_loss) - alone) < 1e-4 * max(1.0, alone)
    assert masked_grads.keys() == packed_grads.keys() and masked_grads
    for name, grad in masked_grads.items():
        assert torch.allclose(packed_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_generation_is_unchanged_by_packed_attention():
    """Without packed segments (generation, padded batches) packed attention is sdpa, masks included."""
    model, tokenizer = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        before = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        logits_before = model(input_ids=ids, attention_mask=mask).logits
        use_packed_attention(model)
        after = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        logits_after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    assert torch.allclose(logits_before, logits_after, atol=1e-6)


def test_packed_attention_leaves_flash_attention_alone():
    model, _ = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"  # as loaded on a GPU with flash-attn installed
    assert not use_packed_attention(model)
    assert model.config._attn_implementation == "flash_attention_2"
