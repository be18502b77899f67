"""Seeded, stratified train/eval split.

Each category gives the eval split its share of the total (largest remainder, so the eval size is
exactly round(n * fraction) whenever categories allow it) and always keeps at least one row for
training: a category the model never trains on cannot be learned, one it is never evaluated on is
only reported.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def eval_quotas(sizes: Sequence[int], fraction: float) -> list[int]:
    """How many rows of each category go to eval.

    Args:
        sizes: rows per category.
        fraction: share of all rows wanted in eval.
    Returns:
        Per category eval count, never more than size - 1.
    """
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    exact = sizes_arr * fraction
    quotas = np.floor(exact).astype(np.int64)
    left = int(round(float(sizes_arr.sum()) * fraction)) - int(quotas.sum())
    # Stable sort: equal remainders go to the category seen first, so the result is reproducible.
    for i in np.argsort(-(exact - quotas), kind="stable")[:max(left, 0)]:
        quotas[i] += 1
    return np.minimum(quotas, np.maximum(sizes_arr - 1, 0)).tolist()


def stratified_split(groups: Sequence[int], fraction: float, seed: int,
                     eligible: Sequence[bool] | None = None) -> np.ndarray:
    """Choose eval rows so every group keeps its share.

    Args:
        groups: a group id per row (use one id for all rows to split without strata).
        fraction: share of eligible rows that go to eval.
        seed: random seed; same inputs and seed, same split.
        eligible: rows that may go to eval (others stay in train, e.g. augmented rows); all when None.
    Returns:
        Boolean array, True where the row goes to eval.
    """
    groups_arr = np.asarray(groups, dtype=np.int64)
    is_eval = np.zeros(len(groups_arr), dtype=bool)
    idx = np.arange(len(groups_arr)) if eligible is None else np.flatnonzero(np.asarray(eligible, dtype=bool))
    if fraction <= 0 or len(idx) < 2:
        return is_eval
    order = idx[np.argsort(groups_arr[idx], kind="stable")]
    _, starts, sizes = np.unique(groups_arr[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    for start, size, quota in zip(starts, sizes, eval_quotas(sizes, fraction)):
        members = order[start:start + size]
        is_eval[rng.permutation(members)[:quota]] = True
    return is_eval
