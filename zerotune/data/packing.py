"""Padding-free packing.

An optimizer step takes a fixed number of examples (the effective batch). They are laid end to end
in rows of at most `row_tokens` tokens, each example with its own position ids starting at 0. With
no attention mask and no KV cache, transformers derives per-example attention from those position
ids, so no token attends across an example boundary and no compute is spent on padding.

Several processes training together (accelerate) each pack every world-th example of a step, so a
step holds the same examples however many processes share it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from zerotune.data.tokenize import Example


@dataclass(frozen=True)
class PackedRow:
    """One micro-batch: a single row of concatenated examples."""

    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T)
    labels: torch.Tensor  # (1, T), already shifted: labels[t] is the target for position t
    n_examples: int

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_target(self) -> int:
        return int((self.labels != -100).sum())


def pack(examples: list[Example]) -> PackedRow:
    """Concatenate examples into one row; each example's last target has no next token, so labels
    are shifted per example and never predict across a boundary."""
    ids, pos, labels = [], [], []
    for ex in examples:
        ids.extend(ex.input_ids)
        pos.extend(range(len(ex.input_ids)))
        labels.extend(ex.labels[1:] + [-100])
    as_row = lambda xs: torch.tensor(xs, dtype=torch.long).unsqueeze(0)  # noqa: E731
    return PackedRow(as_row(ids), as_row(pos), as_row(labels), len(examples))


def split_rows(examples: list[Example], row_tokens: int) -> list[list[Example]]:
    """Group consecutive examples into rows of at most row_tokens tokens (an example longer than
    row_tokens gets a row to itself)."""
    rows: list[list[Example]] = []
    used = 0
    for ex in examples:
        if rows and used + len(ex.input_ids) <= row_tokens:
            rows[-1].append(ex)
            used += len(ex.input_ids)
        else:
            rows.append([ex])
            used = len(ex.input_ids)
    return rows


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a shuffle fixed by (seed, epoch), so a resumed run sees the
    same order as an uninterrupted one."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def replay_pick(n_old: int, count: int, seed: int, epoch: int) -> list[int]:
    """Which old rows an epoch replays: `count` indices, fixed by (seed, epoch) so a resumed run replays
    the same ones, and different each epoch so more of the old data is seen over a run. Every old row
    is drawn once before any is drawn twice."""
    if n_old == 0 or count == 0:
        return []
    rng = random.Random(f"replay:{seed}:{epoch}")  # its own stream: the epoch shuffle stays as it was
    picked: list[int] = []
    while len(picked) < count:
        rows = list(range(n_old))
        rng.shuffle(rows)
        picked.extend(rows[: count - len(picked)])
    return picked


def epoch_examples(examples: list[Example], replay: list[Example], replay_count: int, seed: int,
                   epoch: int) -> list[Example]:
    """One epoch's examples: the new ones plus `replay_count` old ones (continual learning)."""
    if not replay_count:
        return examples
    return examples + [replay[i] for i in replay_pick(len(replay), replay_count, seed, epoch)]


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, smaller batch counts as a step)."""
    return max(1, -(-n_examples // batch_size))


@dataclass(frozen=True)
class StepBatch:
    """One optimizer step: this process's micro-batch rows and the size of the whole step."""

    rows: list[PackedRow]
    n_target: int  # answer tokens of the step in all processes: what the loss is divided by
    n_tokens: int  # tokens of the step in all processes


def no_targets(example: Example) -> Example:
    """The example's first token with nothing to learn: the cheapest filler for a process that has run
    out of work in a step (its forward still reaches every weight, with zero gradient)."""
    return Example(example.input_ids[:1], [-100])


def _process_rows(chunk: list[Example], row_tokens: int, rank: int, world: int) -> list[PackedRow]:
    """This process's rows of a step: every world-th example, packed. All processes get as many rows as
    the busiest one (padded with rows that have no answer tokens): FSDP and ZeRO-3 gather weights
    collectively in every forward, and DDP needs every process in each step's one gradient all-reduce."""
    shares = [split_rows(chunk[r::world], row_tokens) for r in range(world)]
    mine = shares[rank] + [[no_targets(chunk[0])]] * (max(len(s) for s in shares) - len(shares[rank]))
    return [pack(row) for row in mine]


def step_batches(examples: list[Example], batch_size: int, row_tokens: int, seed: int, epoch: int, *,
                 rank: int = 0, world: int = 1):
    """Yield each optimizer step of an epoch as a StepBatch.

    Args:
        examples: the epoch's examples (see epoch_examples).
        batch_size: examples per optimizer step.
        row_tokens: most tokens in one packed row.
        seed, epoch: fix the shuffle.
        rank, world: this process and how many train together; each takes a share of every step,
            so the steps are the same whatever the number of processes.
    """
    order = epoch_order(len(examples), seed, epoch)
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        yield StepBatch(_process_rows(chunk, row_tokens, rank, world), sum(e.n_target for e in chunk), sum(len(e.input_ids) for e in chunk))
