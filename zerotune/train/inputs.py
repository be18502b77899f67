"""The rows a run trains and evaluates on: a prepared folder, or raw files split here.

A raw file gets prepare's per-row defaults here (safe cleaning, exact dedup) and, after the split, the
same slot augmentation `zerotune prepare` applies (data.augment.augment_for_training), so the
one-command path trains on what prepare would have written. A prepared folder is taken as it is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from zerotune.config import DataConfig
from zerotune.data.formats import DataError, read_examples
from zerotune.data.report import OPT_IN, SLOT_KINDS


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


@dataclass
class Splits:
    """What a run trains on, and what was done to the raw rows on the way."""

    train: list[dict]  # original rows, then augmented ones (tagged "augmented")
    eval: list[dict]
    notes: list[str] = field(default_factory=list)  # one line each, for the run header


def _clean(rows: list[dict], cfg: DataConfig, what: str, notes: list[str]) -> list[dict]:
    """Prepare's safe cleaning and exact dedup of raw rows (nothing else of prepare rewrites rows)."""
    from zerotune.data.clean import Cleaner
    from zerotune.data.dedup import row_digest

    cleaner, seen, out = Cleaner(cfg.prepare.clean), set(), []
    emptied = dupes = 0
    for row in rows:
        messages, empty = cleaner.messages(row["messages"])
        if empty:
            emptied += 1
            continue
        digest = row_digest(messages)
        if digest in seen and cfg.prepare.dedup != "none":
            dupes += 1
            continue
        seen.add(digest)
        out.append({**row, "messages": messages})
    changed = sum(cleaner.changed.values())
    if emptied or dupes or changed:
        notes.append(f"{what}: {changed} cleaning changes, {dupes} exact duplicates dropped, {emptied} rows empty "
                     "after cleaning dropped")
    return out


def training_rows(cfg: DataConfig, seed: int, vocab=None) -> Splits:
    """The rows a run trains on: load_splits, plus for raw files prepare's cleaning and slot augmentation.

    Args:
        cfg: the data section (cfg.prepare decides cleaning and augmentation).
        seed: split and augmentation seed.
        vocab: words for fresh Latin slot values (the tokenizer's whole words); None = a shipped list.
    """
    from zerotune.data.augment import augment_for_training

    notes: list[str] = []
    if cfg.train and Path(cfg.train).is_dir():  # a folder from `zerotune prepare`: taken as it is
        train, held = load_splits(cfg, seed)
        return Splits(train, held, notes)
    train, held = load_splits(cfg, seed, clean=lambda rows, what: _clean(rows, cfg, what, notes))
    if any("augmented" in r for r in train):  # already augmented by prepare (a train.jsonl of its output)
        return Splits(train, held, notes)
    made, report = augment_for_training(train, held, cfg.prepare, seed=seed, vocab=vocab)
    for _, name in SLOT_KINDS:
        part = report.get(name) or {}
        if part.get("rows"):
            notes.append(f"augment: +{part['rows']} {name.replace('_', '-')} rows"
                         + (f" on slots {', '.join(part['slots'])}" if part.get("slots") else "")
                         + (f" ({part['why']})" if part.get("why") else ""))
    if not made:
        off = [f"{n.replace('_', '-')}: {(report.get(n) or {}).get('why')}" for _, n in SLOT_KINDS
               if n not in OPT_IN and (report.get(n) or {}).get("why")]
        notes.append("augment: none" + (f" ({'; '.join(off)})" if off else ""))
    return Splits(train + made, held, notes)


def load_splits(cfg: DataConfig, seed: int, clean=None) -> tuple[list[dict], list[dict]]:
    """Train and eval rows (canonical {"messages": ...} dicts) for a run.

    Args:
        cfg: the data section.
        seed: split seed.
    Returns:
        (train_rows, eval_rows); eval_rows is capped at cfg.max_eval_rows.
        clean: applied to the rows of each file read (raw data; see training_rows).
    Raises:
        DataError: missing or invalid data, with file:line details.
    """
    if not cfg.train:
        raise DataError("no training data: pass --data FILE (JSONL, CSV, or a folder from `zerotune prepare`)")
    train_path, prepared_eval = _resolve(cfg.train)
    fmt = cfg.prepare.format
    rows = read_examples(str(train_path), fmt=fmt)
    if clean:
        rows = clean(rows, "train data")
    eval_path = cfg.eval or (str(prepared_eval) if prepared_eval else None)
    if eval_path:
        eval_rows = read_examples(eval_path, fmt=fmt)
        if clean:
            eval_rows = clean(eval_rows, "eval data")
    else:
        rows, eval_rows = split_rows(rows, cfg.eval_fraction, seed, cfg.max_eval_rows)
    if not rows:
        raise DataError(f"{train_path}: no training rows")
    return rows, eval_rows[: cfg.max_eval_rows] if cfg.max_eval_rows else eval_rows
