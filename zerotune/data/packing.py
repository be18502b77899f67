"""Padding-free packing.

An optimizer step takes a fixed number of examples (the effective batch). They are laid end to end
in rows of at most `row_tokens` tokens, each example with its own position ids starting at 0. With
no attention mask and no KV cache, transformers derives per-example attention from those position
ids, so no token attends across an example boundary and no compute is spent on padding.
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


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, smaller batch counts as a step)."""
    return max(1, -(-n_examples // batch_size))


def step_batches(examples: list[Example], batch_size: int, row_tokens: int, seed: int, epoch: int):
    """Yield, for each optimizer step of an epoch, its list of packed micro-batch rows."""
    order = epoch_order(len(examples), seed, epoch)
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        yield [pack(row) for row in split_rows(chunk, row_tokens)]
