"""The training loop: one visible function, forward -> loss -> backward -> step, then the log,
eval and checkpoint blocks. The same loop runs alone or as one of several processes (setup.dist)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from zerotune.data.packing import (PackedRow, epoch_examples, no_targets, pack, split_rows, step_batches,
                                   steps_per_epoch)
from zerotune.data.tokenize import Example
from zerotune.train.distributed import Dist
from zerotune.train.loss import LOGIT_CHUNK, row_loss  # noqa: F401  (part of the loop's interface)


@dataclass
class LoopState:
    """Where training stands; what a checkpoint must restore besides weights and optimizer."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    tokens_seen: int = 0
    history: list[dict] = field(default_factory=list)


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
    replay: list[Example] = field(default_factory=list)  # old examples, for continual learning
    replay_count: int = 0  # old examples mixed into every epoch
    dist: Dist = field(default_factory=Dist)  # the processes training together (one, usually)

    @property
    def epoch_size(self) -> int:
        return len(self.examples) + self.replay_count


def _autocast(setup: LoopSetup):
    if setup.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.autocast_dtype)


def train_step(model, optimizer, scheduler, rows: list[PackedRow], setup: LoopSetup,
               n_target: int | None = None) -> tuple[float, int, int]:
    """One optimizer step over a step's micro-batch rows.

    The loss is normalised by the answer tokens of the whole step, so splitting the same examples
    into more or fewer micro-batches, or over more processes, gives the same gradient.
    Args:
        rows: this process's micro-batch rows of the step.
        n_target: answer tokens of the whole step in all processes (default: those of rows).
    Returns:
        (mean loss per answer token over the whole step, answer tokens, tokens of rows).
    """
    n_target = sum(r.n_target for r in rows) if n_target is None else n_target
    total = 0.0
    for i, row in enumerate(rows):
        with setup.dist.micro_batch(last=i == len(rows) - 1):
            with _autocast(setup):
                loss = setup.dist.loss(model, row, setup.device) / max(n_target, 1)
            setup.dist.backward(loss, setup.grad_scaler)
        total += float(loss.detach())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if setup.grad_scaler:
        setup.grad_scaler.unscale_(optimizer)
    setup.dist.clip(params, setup.max_grad_norm)
    if setup.grad_scaler:
        setup.grad_scaler.step(optimizer)
        setup.grad_scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return setup.dist.all_sum([total])[0], n_target, sum(r.n_tokens for r in rows)


def run(model, optimizer, scheduler, setup: LoopSetup, state: LoopState, *,
        on_step: Callable[[LoopState, dict], None], should_stop: Callable[[], bool] = lambda: False) -> LoopState:
    """Train from `state` until setup.total_steps, calling on_step after every optimizer step.

    Args:
        model: the (peft) model, in train mode on setup.device.
        optimizer, scheduler: built for setup.total_steps.
        setup: data, batch shape, precision, processes.
        state: where to start (a fresh LoopState, or one restored from a checkpoint).
        on_step: logging / eval / checkpoint hook, given the state and this step's record.
        should_stop: polled after each step (a signal arrived); training stops cleanly when True.
    Returns:
        The final state.
    """
    model.train()
    per_epoch = steps_per_epoch(setup.epoch_size, setup.batch_size)
    while state.step < setup.total_steps and state.epoch < setup.epochs:
        examples = epoch_examples(setup.examples, setup.replay, setup.replay_count, setup.seed, state.epoch)
        batches = step_batches(examples, setup.batch_size, setup.row_tokens, setup.seed, state.epoch,
                               rank=setup.dist.rank, world=setup.dist.world)
        for i, batch in enumerate(batches):
            if i < state.step_in_epoch:
                continue  # resumed mid-epoch: these steps are already in the weights
            start = time.perf_counter()
            loss, _, _ = train_step(model, optimizer, scheduler, batch.rows, setup, batch.n_target)
            seconds = time.perf_counter() - start
            state.step += 1
            state.step_in_epoch = i + 1
            state.tokens_seen += batch.n_tokens
            record = {"step": state.step, "epoch": round(state.epoch + (i + 1) / per_epoch, 4),
                      "loss": loss if math.isfinite(loss) else float("nan"),
                      "lr": scheduler.get_last_lr()[0], "tokens": batch.n_tokens, "target_tokens": batch.n_target,
                      "tokens_per_second": batch.n_tokens / max(seconds, 1e-9)}
            on_step(state, record)
            if state.step >= setup.total_steps or should_stop():
                return state
        state.epoch += 1
        state.step_in_epoch = 0
    return state


@torch.no_grad()
def eval_loss(model, examples: list[Example], setup: LoopSetup) -> float:
    """Mean cross-entropy per answer token over examples (packed the same way as training), each
    process scoring every world-th row."""
    was_training = model.training
    model.eval()
    groups = split_rows(examples, setup.row_tokens)
    rank, world = setup.dist.rank, setup.dist.world
    total, count = 0.0, 0
    for k in range(rank, -(-len(groups) // world) * world, world):
        row = pack(groups[k] if k < len(groups) else [no_targets(examples[0])])  # same forward count everywhere
        with _autocast(setup):
            total += float(setup.dist.loss(model, row, setup.device))
        count += row.n_target
    total, count = setup.dist.all_sum([total, count])
    model.train(was_training)
    return total / max(count, 1)
