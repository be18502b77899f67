"""The training loss: summed cross-entropy over a packed row's answer tokens, computed without ever
holding the full [tokens x vocab] logits."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from zerotune.data.packing import PackedRow
from zerotune.models.attention import segments
from zerotune.train import neftune

LOGIT_CHUNK = 1024  # answer positions whose logits exist at once; bounds memory for 129k-token vocabularies


def _decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def row_loss(model, row: PackedRow, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over a packed row's answer tokens.

    Logits are computed only at positions that have a target, in chunks, and recomputed in the
    backward pass when there is more than one chunk, so the [tokens x vocab] matrix never exists.
    A row with no answer tokens gives a zero loss that still reaches every trainable weight.
    """
    decoder, head = _decoder_and_head(model)
    # no mask, no cache: packed examples stay apart (by the position ids; with packed attention, by
    # running attention per example on the segments)
    segs = segments(row.position_ids)
    with neftune.packed(segs):
        hidden = decoder(input_ids=row.input_ids.to(device), position_ids=row.position_ids.to(device),
                         use_cache=False, packed_segments=segs).last_hidden_state
    labels = row.labels.to(device)
    keep = labels != -100
    hidden, targets = hidden[keep], labels[keep]
    if hidden.shape[0] <= LOGIT_CHUNK:
        return _chunk_loss(head, hidden, targets)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], LOGIT_CHUNK):
        part = slice(i, i + LOGIT_CHUNK)
        total = total + checkpoint(_chunk_loss, head, hidden[part], targets[part], use_reentrant=False)
    return total


class RowLoss(torch.nn.Module):
    """The model and its loss as one module, for a distributed engine to wrap: DDP synchronises only
    the gradients of work done inside the forward of the module it wraps, and FSDP gathers sharded
    weights there."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # accelerate's FSDP auto-wrap reads the transformer block class from the wrapped module
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return row_loss(self.model, PackedRow(input_ids, position_ids, labels, 0), input_ids.device)
