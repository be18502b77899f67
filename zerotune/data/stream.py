"""The streaming pass of prepare: read, validate, clean, scrub, exact-dedup and budget every row.

Rows are written, as they pass, to a canonical JSONL file. What later steps need of each kept row
(origin, category, lengths) lives in compact arrays, so memory grows by tens of bytes per row, not
by its text; exact dedup keeps 16-byte digests. Every row that does not pass is counted under the
stage that stopped it and, when --skip-invalid allows going on, written to rejects.jsonl.

With several processes (cfg.workers, or "auto": as many as there are idle CPUs, for large files) the
work on each row alone (rowwork.py) runs in worker processes for JSONL
inputs; the main process keeps what needs all rows in order: the file's format, dedup, the budget
and writing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from array import array
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterator

from tqdm import tqdm

from zerotune.config import PrepareConfig
from zerotune.data.dedup import ExactDedup
from zerotune.data.formats import FormatGate
from zerotune.data.reader import Problem, is_jsonl, iter_records, jsonl_lines, or_empty
from zerotune.data.rowwork import Kept, RowWork, encode_row, run_batch

CountTokens = Callable[[list[dict]], int]
BATCH_ROWS = 2000
IN_FLIGHT = 6  # batches queued per run: bounds memory while keeping both workers busy


class Rejects:
    """rejects.jsonl: one line per row that was left out, with where it came from and why."""

    def __init__(self, path: str):
        self.path, self._f = path, None
        self.by_stage: Counter[str] = Counter()

    def add(self, stage: str, file: str, line: int | None, reason: str, **extra) -> None:
        """Record one left-out row; extra carries field, raw (the original text), row or duplicate_of."""
        self.by_stage[stage] += 1
        if self._f is None:
            # backslashreplace: a lone surrogate in a rejected row is written as its \\udXXX escape
            self._f = open(self.path, "w", encoding="utf-8", errors="backslashreplace")
        item = {"file": file, "line": line, "stage": stage, "reason": reason}
        item.update({k: v for k, v in extra.items() if v is not None})
        self._f.write(json.dumps(item, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def fit_budget(messages: list[dict], count_tokens: CountTokens, max_tokens: int,
               policy: str) -> tuple[list[dict] | None, bool]:
    """Make a conversation fit a token budget by cutting the last answer, or give up.

    Returns:
        (messages, truncated): messages is None when the row must be dropped.
    """
    if count_tokens(messages) <= max_tokens:
        return messages, False
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if policy == "drop" or last is None:
        return None, False
    text = messages[last]["content"]

    def cut(n: int) -> list[dict]:
        return [*messages[:last], {"role": "assistant", "content": text[:n].rstrip()}, *messages[last + 1:]]

    lo, hi = 0, len(text)  # invariant: text[:lo] fits (or lo == 0), text[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count_tokens(cut(mid)) <= max_tokens else (lo, mid)
    kept = cut(lo)
    if not kept[last]["content"] or count_tokens(kept) > max_tokens:
        return None, False
    return kept, True


AUTO_MIN_BYTES = 32 * 2**20  # below this, starting worker processes costs more than it saves
AUTO_MAX_WORKERS = 4


def _busy_elsewhere() -> float:
    """Runnable tasks other than this one, from /proc/loadavg sampled a few times (the load average
    itself lags by a minute and counts this process too)."""
    samples = []
    for _ in range(5):
        with open("/proc/loadavg") as f:
            samples.append(int(f.read().split()[3].split("/")[0]) - 1)
        time.sleep(0.01)
    return float(sorted(samples)[len(samples) // 2])


def idle_cpus() -> float:
    """CPUs this process may use minus those other tasks keep busy right now."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        return cpus - _busy_elsewhere()
    except (OSError, ValueError, IndexError):
        return float(cpus)


def auto_workers(paths: list[str]) -> int:
    """Processes for the per-row work when cfg.workers is "auto".

    Workers spend about 40% more CPU in all (every row crosses processes twice), so they pay only where
    cores would otherwise idle: measured on a quiet 2-core machine, 1M rows went 19.1k -> 24.4k rows/s
    with two workers, while with the other core busy one process was faster.
    """
    size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    if size < AUTO_MIN_BYTES:
        return 1
    return max(1, min(AUTO_MAX_WORKERS, int(idle_cpus() + 0.5)))


def _start_method() -> str:
    """fork where it is safe, spawn otherwise.

    fork needs no `if __name__ == "__main__"` guard in the caller's script, but copying a process
    whose native threads (torch, tensorflow, jax) may hold locks can hang the copy; there, spawn.
    """
    threaded = any(name in sys.modules for name in ("torch", "tensorflow", "jax"))
    return "fork" if "fork" in multiprocessing.get_all_start_methods() and not threaded else "spawn"


class StreamPass:
    """One pass over the input files that leaves the surviving rows in a canonical JSONL file.

    Attributes (read by prepare and the report):
        work: the per-row work, with the cleaning and PII counts.
        files: path, formats and row counts per input file.
        problems / problem_total / problem_kinds: invalid input, capped list and full counts.
        fatal: file-level problems (missing, directory, empty) that stop any run.
        file_id, line, category, in_len, out_len, augmented: one entry per kept row.
    """

    def __init__(self, cfg: PrepareConfig, rows_path: str, rejects: Rejects, *,
                 count_tokens: CountTokens | None = None, max_tokens: int | None = None, progress: bool = True):
        self.cfg, self.rejects, self.progress = cfg, rejects, progress
        self.work = RowWork(cfg)
        self.cleaner, self.rules = self.work.cleaner, self.work.rules
        self.exact = ExactDedup() if cfg.dedup != "none" else None
        self.budget = (count_tokens, max_tokens) if count_tokens and max_tokens else None
        self._out = open(rows_path, "wb")
        self.paths: list[str] = []
        self.files: list[dict] = []
        self.warnings: list[str] = []
        self.problems: list[Problem] = []
        self.fatal: list[Problem] = []
        self.problem_total, self.problem_kinds = 0, Counter()
        self.failing = False  # invalid rows found and not to be skipped: only validation still matters
        self.rows_in, self.truncated, self.workers = 0, 0, 1
        self.categories: dict[str, int] = {}
        self.file_id, self.line = array("H"), array("I")
        self.category, self.in_len, self.out_len = array("i"), array("I"), array("I")
        self.augmented = bytearray()

    @property
    def kept(self) -> int:
        return len(self.line)

    @property
    def pii_hits(self) -> Counter:
        return self.work.pii_hits

    @property
    def rows_with_pii(self) -> int:
        return self.work.rows_with_pii

    def run(self, paths: list[str]) -> None:
        """Stream every file; afterwards the canonical rows file is complete and closed."""
        bar = tqdm(unit=" rows", desc="prepare", disable=not self.progress, mininterval=0.5, file=sys.stderr)
        # Workers cost about 40% more CPU in all (every row crosses processes twice), so they pay only
        # where cores would otherwise idle; on a shared or hyperthreaded 2-vCPU machine one process wins.
        # The budget's tokenizer cannot be shipped to other processes at all.
        workers = auto_workers(paths) if self.cfg.workers == "auto" else self.cfg.workers
        self.workers = workers if self.budget is None else 1
        pool = (ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(_start_method()))
                if self.workers > 1 else None)
        try:
            for path in paths:
                self._file(path, bar, pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            bar.close()
            self._out.close()

    def _results(self, path: str, pool: ProcessPoolExecutor | None) -> Iterator[tuple[str | None, tuple]]:
        """(original text, rowwork result) for every row of a file, in order."""
        if pool is None or not is_jsonl(path, self.cfg.format):
            for rec in iter_records(path, self.cfg.format, self.cfg.max_line_bytes, self.warnings):
                if isinstance(rec, Problem):
                    yield rec.raw, ("problem", None, rec.line, rec)
                else:
                    yield rec.raw, self.work.record(rec)
            return
        pending: deque[tuple[list, Future]] = deque()
        batch: list = []
        for item in or_empty(path, jsonl_lines(path, self.cfg.max_line_bytes, self.warnings)):
            batch.append(item)
            if len(batch) == BATCH_ROWS:
                pending.append((batch, pool.submit(run_batch, self.cfg, path, batch)))
                batch = []
                if len(pending) >= IN_FLIGHT:
                    yield from self._collect(*pending.popleft())
        if batch:
            pending.append((batch, pool.submit(run_batch, self.cfg, path, batch)))
        while pending:
            yield from self._collect(*pending.popleft())

    def _collect(self, batch: list, future: Future) -> Iterator[tuple[str | None, tuple]]:
        results, counts = future.result()
        self.work.add_counts(counts)
        for item, result in zip(batch, results):
            yield (item.raw if isinstance(item, Problem) else item[1]), result

    def _file(self, path: str, bar: tqdm, pool: ProcessPoolExecutor | None) -> None:
        file_id = len(self.paths)
        self.paths.append(path)
        info = {"path": path, "formats": Counter(), "rows": 0, "problems": 0, "mixed_rows": 0}
        self.files.append(info)
        gate = FormatGate(path, self.cfg.allow_mixed_formats)
        for n, (raw, (kind, fmt, line, detail)) in enumerate(self._results(path, pool)):
            # The gate only has work on a file's first row and on rows of another format.
            mixed = gate.check(line, fmt, raw) if fmt is not None and fmt != gate.fmt else None
            if mixed is not None or kind == "problem":
                info["problems"] += 1
                info["mixed_rows"] += mixed is not None
                self._problem(mixed or detail)
            elif kind == "reject":
                info["formats"][fmt] += 1
                self.rows_in += 1
                if not self.failing:
                    stage, reason, field = detail
                    self.rejects.add(stage, path, line, reason, field=field, raw=raw)
            else:
                info["formats"][fmt] += 1
                self._keep(path, detail, raw, file_id)
            if n % 4096 == 4095:
                bar.update(4096)
        info["rows"] = sum(info["formats"].values()) + info["problems"]
        info["formats"] = dict(info["formats"])

    def _problem(self, p: Problem, counted: bool = False) -> None:
        """Record invalid input; counted: the row was already counted in rows_in."""
        if p.line is None:
            self.fatal.append(p)
            self.failing = True
            return
        self.failing = self.failing or not self.cfg.skip_invalid
        self.rows_in += not counted
        self.problem_total += 1
        self.problem_kinds[p.message.split(":")[0].split(" (")[0]] += 1
        if len(self.problems) < self.cfg.max_errors:
            self.problems.append(p)
        if self.cfg.skip_invalid:
            self.rejects.add("invalid", p.path, p.line, p.message, field=p.field, raw=p.raw)

    def _keep(self, path: str, k: Kept, raw: str | None, file_id: int) -> None:
        self.rows_in += 1
        if self.failing:
            return
        first = None if self.exact is None else self.exact.first(k.digest)
        if first is not None:
            self.rejects.add("duplicate", path, k.line, "exact duplicate", duplicate_of=self.where(first), raw=raw)
            return
        data = k.data
        if self.budget is not None:  # only ever without workers, so the messages are here
            messages, cut = fit_budget(k.messages, *self.budget, self.cfg.too_long)
            if messages is None:
                self.rejects.add("too_long", path, k.line, f"over the {self.budget[1]}-token budget", raw=raw)
                return
            if cut:
                self.truncated += 1
                extra = {"category": k.category, "augmented": k.augmented}
                data = encode_row({"messages": messages, **{key: v for key, v in extra.items() if v is not None}})
                k = k._replace(out_len=sum(len(m["content"]) for m in messages if m["role"] == "assistant"))
        if data is None:
            self._problem(Problem(path, k.line, "invalid Unicode: a lone surrogate (\\ud800-\\udfff escape)",
                                  raw=raw), counted=True)
            return
        if self.exact is not None:
            self.exact.add(k.digest, len(self.line))
        self._out.write(data)
        self._record(k, file_id)

    def _record(self, k: Kept, file_id: int) -> None:
        cat = k.category
        self.category.append(-1 if cat is None else self.categories.setdefault(cat, len(self.categories)))
        self.in_len.append(k.in_len)
        self.out_len.append(k.out_len)
        self.file_id.append(file_id)
        self.line.append(k.line)
        self.augmented.append(k.augmented is not None)

    def where(self, index: int) -> str:
        """file:line of a kept row."""
        return f"{self.paths[self.file_id[index]]}:{self.line[index]}"
