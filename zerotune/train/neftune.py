"""NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"): uniform
noise on the input embeddings while training, of magnitude alpha / sqrt(L * d) for an example of L
tokens and embedding width d. transformers' Trainer scales by the whole sequence's length; here each
packed example gets its own L, so packing does not shrink the noise."""

from __future__ import annotations

import contextlib
import math

import torch

_segments: tuple[tuple[int, int], ...] | None = None  # the packed row now in the forward pass


@contextlib.contextmanager
def packed(segments: tuple[tuple[int, int], ...]):
    """Tell the hook where the examples of the row being run start and end."""
    global _segments
    before, _segments = _segments, segments
    try:
        yield
    finally:
        _segments = before


def _lengths(tokens: int, device: torch.device) -> torch.Tensor:
    """Each token's example length (the whole row when the segments are not this row's)."""
    segs = _segments if _segments and _segments[-1][1] == tokens else ((0, tokens),)
    sizes = torch.tensor([e - s for s, e in segs], dtype=torch.float32, device=device)
    return sizes.repeat_interleave(sizes.long())


def attach(model: torch.nn.Module, alpha: float):
    """Add the noise to the model's input embeddings in training mode; returns the hook's handle
    (None when alpha is 0)."""
    if not alpha:
        return None
    embeddings = model.get_input_embeddings()

    def hook(module, inputs, output):
        if not module.training:
            return output
        scale = alpha / torch.sqrt(_lengths(output.shape[-2], output.device) * output.shape[-1])
        noise = torch.empty_like(output).uniform_(-1, 1) * scale.to(output.dtype)[:, None]
        return output + noise

    return embeddings.register_forward_hook(hook)


def magnitude(alpha: float, tokens: int, width: int) -> float:
    """The noise bound for one example of `tokens` tokens (what the hook draws within)."""
    return alpha / math.sqrt(tokens * width)
