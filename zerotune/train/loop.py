"""The training loop: one visible function, forward -> loss -> backward -> step, then the log,
eval and checkpoint blocks."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from zerotune.data.packing import PackedRow, step_batches, steps_per_epoch
from zerotune.data.tokenize import Example

LOGIT_CHUNK = 1024  # answer positions whose logits exist at once; bounds memory for 129k-token vocabularies


@dataclass
class LoopState:
    """Where training stands; what a checkpoint must restore besides weights and optimizer."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    tokens_seen: int = 0
    history: list[dict] = field(default_factory=list)


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
    """
    decoder, head = _decoder_and_head(model)
    hidden = decoder(input_ids=row.input_ids.to(device), position_ids=row.position_ids.to(device),
                     use_cache=False).last_hidden_state  # no mask, no cache: packed examples stay apart
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


@dataclass
class LoopSetup:
    """Everything the loop needs that is not model or optimizer."""

    examples: list[Example]
    batch_size: int
    row_tokens: int
    seed: int
    epochs: int
    total_steps: int
    max_grad_norm: float
    device: torch.device
    autocast_dtype: torch.dtype | None
    grad_scaler: torch.amp.GradScaler | None = None


def _autocast(setup: LoopSetup):
    if setup.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.autocast_dtype)


def train_step(model, optimizer, scheduler, rows: list[PackedRow], setup: LoopSetup) -> tuple[float, int, int]:
    """One optimizer step over a step's micro-batch rows.

    The loss is normalised by the answer tokens of the whole step, so splitting the same examples
    into more or fewer micro-batches gives the same gradient.
    Returns:
        (mean loss per answer token, answer tokens, all tokens).
    """
    n_target = sum(r.n_target for r in rows)
    total = 0.0
    for row in rows:
        with _autocast(setup):
            loss = row_loss(model, row, setup.device) / max(n_target, 1)
        (setup.grad_scaler.scale(loss) if setup.grad_scaler else loss).backward()
        total += float(loss.detach())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if setup.grad_scaler:
        setup.grad_scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, setup.max_grad_norm)
    if setup.grad_scaler:
        setup.grad_scaler.step(optimizer)
        setup.grad_scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total, n_target, sum(r.n_tokens for r in rows)


def run(model, optimizer, scheduler, setup: LoopSetup, state: LoopState, *,
        on_step: Callable[[LoopState, dict], None], should_stop: Callable[[], bool] = lambda: False) -> LoopState:
    """Train from `state` until setup.total_steps, calling on_step after every optimizer step.

    Args:
        model: the (peft) model, in train mode on setup.device.
        optimizer, scheduler: built for setup.total_steps.
        setup: data, batch shape, precision.
        state: where to start (a fresh LoopState, or one restored from a checkpoint).
        on_step: logging / eval / checkpoint hook, given the state and this step's record.
        should_stop: polled after each step (a signal arrived); training stops cleanly when True.
    Returns:
        The final state.
    """
    model.train()
    per_epoch = steps_per_epoch(len(setup.examples), setup.batch_size)
    while state.step < setup.total_steps and state.epoch < setup.epochs:
        batches = step_batches(setup.examples, setup.batch_size, setup.row_tokens, setup.seed, state.epoch)
        for i, rows in enumerate(batches):
            if i < state.step_in_epoch:
                continue  # resumed mid-epoch: these steps are already in the weights
            start = time.perf_counter()
            loss, n_target, n_tokens = train_step(model, optimizer, scheduler, rows, setup)
            seconds = time.perf_counter() - start
            state.step += 1
            state.step_in_epoch = i + 1
            state.tokens_seen += n_tokens
            record = {"step": state.step, "epoch": round(state.epoch + (i + 1) / per_epoch, 4),
                      "loss": loss if math.isfinite(loss) else float("nan"),
                      "lr": scheduler.get_last_lr()[0], "tokens": n_tokens, "target_tokens": n_target,
                      "tokens_per_second": n_tokens / max(seconds, 1e-9)}
            on_step(state, record)
            if state.step >= setup.total_steps or should_stop():
                return state
        state.epoch += 1
        state.step_in_epoch = 0
    return state


@torch.no_grad()
def eval_loss(model, examples: list[Example], setup: LoopSetup) -> float:
    """Mean cross-entropy per answer token over examples (packed the same way as training)."""
    from zerotune.data.packing import pack, split_rows

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for row_examples in split_rows(examples, setup.row_tokens):
        row = pack(row_examples)
        with _autocast(setup):
            total += float(row_loss(model, row, setup.device))
        count += row.n_target
    model.train(was_training)
    return total / max(count, 1)
