"""`zerotune prepare`: raw data files in, a clean train/eval split and a 3C report out.

    read + validate -> clean -> PII -> exact dedup -> token budget     (one streaming pass)
    -> near dedup -> stratified split -> augment (train only) -> write -> report

Augmentation: template specs and back-translation when given, and (by default, where the data calls for
it) rows with fresh copy-slot values or other rows' phrasing (augment.augment_for_training).

Everything is written into a hidden staging folder next to OUT and moved into place only when the
whole run succeeded, so a failed run never leaves a half-written train.jsonl behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson

from zerotune.config import PrepareConfig
from zerotune.data.augment import Translator, augment_for_training, back_translate, fill_templates
from zerotune.data.dedup import NearDedup, row_digest
from zerotune.data.formats import DataError
from zerotune.data.reader import Problem
from zerotune.data.report import build_report, schema_entry, slot_warnings, write_report
from zerotune.data.schema import infer_schema
from zerotune.data.split import stratified_split
from zerotune.data.rowwork import encode_row
from zerotune.data.slots import keeps_copies
from zerotune.data.stream import CountTokens, Rejects, StreamPass, fit_budget

log = logging.getLogger(__name__)
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "report.md", "report.json", "report.png", "rejects.jsonl")
ROWS_FILE = "rows.tmp.jsonl"
SLOT_AUGMENTATIONS = ("slot_swap", "template_mix", "clause_order", "synonym_swap")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out` that replaces prepare's files in `out` only if the block succeeds."""
    if out.exists() and not out.is_dir():
        raise DataError([Problem(str(out), None, "output path exists and is not a directory")])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise DataError([Problem(str(out), None, f"cannot write the output folder: {err.strerror}")]) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        os.rename(tmp, out)
        return
    # OUT may hold other things (a run directory's data/ folder); only prepare's own files change.
    for name in OUTPUT_FILES:
        if (tmp / name).exists():
            os.replace(tmp / name, out / name)
        elif (out / name).exists():
            (out / name).unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def _check(run: StreamPass, cfg: PrepareConfig) -> None:
    if run.fatal:
        raise DataError(run.fatal + run.problems, len(run.fatal) + run.problem_total)
    if run.problem_total and not cfg.skip_invalid:
        raise DataError(run.problems, run.problem_total,
                        hint="(pass --skip-invalid to leave bad rows out; they are listed in rejects.jsonl)")
    if run.kept == 0:
        lost = ", ".join(f"{n} {stage}" for stage, n in run.rejects.by_stage.items()) or "none read"
        raise DataError([Problem(", ".join(run.paths), None, f"no usable rows left ({lost})")])


def _read_rows(path: Path, wanted: np.ndarray | None = None) -> Iterator[tuple[int, dict]]:
    """(index, row) of the staged canonical rows, all or only where `wanted` is True."""
    with open(path, "rb") as f:
        for k, line in enumerate(f):
            if wanted is None or wanted[k]:
                yield k, orjson.loads(line)


def _near_dedup(run: StreamPass, rows: Path, cfg: PrepareConfig,
                progress: bool) -> tuple[NearDedup | None, np.ndarray, str]:
    """Near-duplicate rows of the staged file (rejected, with the row they repeat) and the index built."""
    removed = np.zeros(run.kept, dtype=bool)
    if cfg.dedup != "near":
        return None, removed, "off"
    if run.kept > cfg.near_dup_max_rows:
        note = f"skipped: {run.kept} rows > near_dup_max_rows={cfg.near_dup_max_rows}"
        log.warning("near dedup %s", note)
        return None, removed, note
    from tqdm import tqdm

    near = NearDedup(cfg.near_dup_threshold)
    for k, row in tqdm(_read_rows(rows), total=run.kept, desc="near dedup", disable=not progress, mininterval=0.5):
        dup = near.add(k, row["messages"])
        if dup is not None:
            removed[k] = True
            run.rejects.add("near_duplicate", run.paths[run.file_id[k]], run.line[k],
                            f"near duplicate (MinHash Jaccard >= {cfg.near_dup_threshold})",
                            duplicate_of=run.where(dup), row=row)
    return near, removed, f"threshold {cfg.near_dup_threshold}"


def _generate(train_rows: list[dict], cfg: PrepareConfig, seed: int, template_spec: str | None,
              translator: Translator | None, progress: bool, copy_names: list[str]) -> tuple[list[dict], Counter]:
    """Template and back-translated rows, and the paraphrases left out because they lost a copied value."""
    made, lost = fill_templates(template_spec, seed) if template_spec else [], Counter()
    if translator is not None and cfg.augment_ratio > 0 and train_rows:
        k = min(len(train_rows), round(len(train_rows) * cfg.augment_ratio))
        picks = np.random.default_rng(seed).choice(len(train_rows), k, replace=False)
        sources = [train_rows[i] for i in sorted(picks)]
        paraphrases = back_translate(sources, translator, cfg.translate_src, cfg.translate_pivot, progress=progress)
        # An answer that copies a value the paraphrase no longer holds would teach the model to invent it.
        kept = [row for row in paraphrases if keeps_copies(row, copy_names)]
        if len(kept) < len(paraphrases):
            lost["copied value lost in translation"] = len(paraphrases) - len(kept)
        made += kept
    return made, lost


def _admit(run: StreamPass, near: NearDedup | None, made: list[dict]) -> tuple[list[dict], Counter]:
    """Augmented rows that survive the same cleaning as the originals and duplicate none of them."""
    kept, dropped, seen = [], Counter(), set()
    for row in made:
        messages, emptied = run.cleaner.messages(row["messages"])
        if emptied:
            dropped["empty after cleaning"] += 1
            continue
        if run.rules is not None:
            messages, hits = run.work.scrub(messages)
            if hits and run.cfg.pii == "drop":
                dropped["PII"] += 1
                continue
        if run.budget is not None:
            messages, _ = fit_budget(messages, *run.budget, run.cfg.too_long)
            if messages is None:
                dropped["too long"] += 1
                continue
        digest = row_digest(messages)
        if digest in seen or (run.exact is not None and run.exact.first(digest) is not None):
            dropped["exact duplicate"] += 1
            continue
        new = {"messages": messages, **{k: row[k] for k in ("category", "augmented") if k in row}}
        if encode_row(new) is None:  # a translator may return a lone surrogate
            dropped["invalid Unicode"] += 1
            continue
        # Slot swaps, phrasing mixes and reorderings are near duplicates of their sources by design: exact dedup only.
        near_checked = near is not None and row.get("augmented") not in SLOT_AUGMENTATIONS
        if near_checked and near.add(run.kept + len(kept), messages) is not None:
            dropped["near duplicate"] += 1
            continue
        seen.add(digest)
        kept.append(new)
    return kept, dropped


def _write_splits(out: Path, rows: Path, keep: np.ndarray, is_eval: np.ndarray, extra: list[dict]) -> None:
    keep_b, eval_b = keep.tobytes(), is_eval.tobytes()  # bytes index faster than numpy scalars
    with open(rows, "rb") as src, open(out / "train.jsonl", "wb") as train, open(out / "eval.jsonl", "wb") as ev:
        for k, line in enumerate(src):
            if keep_b[k]:
                (ev if eval_b[k] else train).write(line)
        for row in extra:
            train.write(encode_row(row))


def prepare(paths: list[str] | str, out: str, cfg: PrepareConfig | None = None, *, eval_fraction: float = 0.1,
            seed: int = 42, count_tokens: CountTokens | None = None, max_tokens: int | None = None,
            template_spec: str | None = None, translator: Translator | None = None, progress: bool = True,
            vocab: list[str] | None = None) -> dict:
    """Validate, clean, dedup, scrub, augment and split data files into OUT.

    Args:
        paths: input files (JSONL, JSON array or CSV; formats detected per file unless cfg.format says).
        out: output folder; gets train.jsonl, eval.jsonl, report.md/.json/.png and rejects.jsonl if any.
        cfg: the prepare section of the config (defaults when None).
        eval_fraction: share of rows held out for eval, stratified by category.
        seed: seeds the split and augmentation.
        count_tokens: tokens of a conversation under the chosen model and template; None skips the budget.
        max_tokens: the token budget per row; None skips it.
        template_spec: YAML template spec to fill (overrides cfg.templates).
        translator: back-translation backend; None means no back-translation.
        progress: tqdm progress bars on stderr.
        vocab: words slot swap draws Latin values from (e.g. the tokenizer's whole words); None = shipped list.
    Returns:
        The report dict (also written as report.json).
    Raises:
        DataError: invalid input (every problem listed, capped at cfg.max_errors) or nothing usable.
    """
    cfg = cfg or PrepareConfig()
    paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
    if not paths:
        raise DataError([Problem("prepare", None, "no input files given")])
    with staging(Path(out)) as tmp:
        rows, rejects = tmp / ROWS_FILE, Rejects(str(tmp / "rejects.jsonl"))
        try:
            run = StreamPass(cfg, str(rows), rejects, count_tokens=count_tokens, max_tokens=max_tokens,
                             progress=progress)
            run.run(paths)
            _check(run, cfg)
            near, removed, near_note = _near_dedup(run, rows, cfg, progress)
            keep = ~removed
            original = np.frombuffer(bytes(run.augmented), dtype=np.uint8) == 0
            is_eval = stratified_split(run.category, eval_fraction, seed, eligible=keep & original)
            # Augmentation needs the rows in memory; it is for small data sets, so a large file stays
            # streamed (bounded memory) and the skip is logged.
            small = int(keep.sum()) <= cfg.augment_max_rows
            if not small:
                run.warnings.append(f"augmentation skipped: {int(keep.sum())} rows > "
                                    f"augment_max_rows={cfg.augment_max_rows}")
            train_rows = [row for _, row in _read_rows(rows, keep & ~is_eval & original)] if small else []
            eval_rows = [row for _, row in _read_rows(rows, keep & is_eval)] if small else []
            slotted, slots = augment_for_training(train_rows, eval_rows, cfg, seed=seed, vocab=vocab)
            schema = schema_entry(*infer_schema(train_rows)) if small else \
                schema_entry(None, "not read on data above augment_max_rows")
            made, lost = _generate(train_rows, cfg, seed, template_spec or cfg.templates, translator, progress,
                                   slots["copy_fields"])
            del train_rows, eval_rows
            made += slotted
            extra, dropped = _admit(run, near, made)
            made_by = Counter(r.get("augmented", "template") for r in made) + Counter(
                {"back_translation": sum(lost.values())})
            dropped.update(lost)
            _write_splits(tmp, rows, keep, is_eval, extra)
        finally:
            rejects.close()
        rows.unlink()
        for warning in run.warnings:
            log.warning(warning)
        report = build_report(run, cfg, keep=keep, is_eval=is_eval, extra=extra, made=sum(made_by.values()),
                              dropped=dropped, near_note=near_note, seed=seed, eval_fraction=eval_fraction,
                              made_by=dict(made_by), slots=slots)
        report["schema"] = schema
        for warning in slot_warnings(slots):
            log.warning(warning)
        write_report(tmp, report)
    return report
