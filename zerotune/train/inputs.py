"""The rows a run trains and evaluates on: a prepared folder, or raw files split here."""

from __future__ import annotations

import random
from pathlib import Path

from zerotune.config import DataConfig
from zerotune.data.formats import DataError, read_examples


def _resolve(path: str) -> tuple[Path, Path | None]:
    """A prepared folder (from `zerotune prepare`) gives its train.jsonl and eval.jsonl."""
    p = Path(path)
    if p.is_dir() and (p / "train.jsonl").is_file():
        ev = p / "eval.jsonl"
        return p / "train.jsonl", ev if ev.is_file() and ev.stat().st_size > 0 else None
    return p, None


def split_rows(rows: list[dict], fraction: float, seed: int, cap: int) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded share of rows (at most `cap`, at least one when fraction > 0 and rows > 1)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(rows) * fraction)), cap or len(rows) - 1, len(rows) - 1)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def load_splits(cfg: DataConfig, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and eval rows (canonical {"messages": ...} dicts) for a run.

    Args:
        cfg: the data section.
        seed: split seed.
    Returns:
        (train_rows, eval_rows); eval_rows is capped at cfg.max_eval_rows.
    Raises:
        DataError: missing or invalid data, with file:line details.
    """
    if not cfg.train:
        raise DataError("no training data: pass --data FILE (JSONL, CSV, or a folder from `zerotune prepare`)")
    train_path, prepared_eval = _resolve(cfg.train)
    fmt = cfg.prepare.format
    rows = read_examples(str(train_path), fmt=fmt)
    eval_path = cfg.eval or (str(prepared_eval) if prepared_eval else None)
    if eval_path:
        eval_rows = read_examples(eval_path, fmt=fmt)
    else:
        rows, eval_rows = split_rows(rows, cfg.eval_fraction, seed, cfg.max_eval_rows)
    if not rows:
        raise DataError(f"{train_path}: no training rows")
    return rows, eval_rows[: cfg.max_eval_rows] if cfg.max_eval_rows else eval_rows
