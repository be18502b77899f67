"""The part of prepare's streaming pass that looks at one row alone.

Parse, convert to the canonical form, clean, scrub PII, digest and encode: none of it depends on
other rows, so with cfg.workers > 1 prepare hands batches of JSONL lines to worker processes and
keeps only what needs every row (format of the file, dedup, writing) in the main process.

A result is one of (fmt: the row's format, None when unknown):
    ("problem", fmt, line, Problem)                   invalid input
    ("reject", fmt, line, (stage, reason, field))     valid, but cleaning or PII rules leave it out
    ("kept", fmt, line, Kept)                         ready to be deduplicated and written
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import NamedTuple

import orjson

from zerotune.config import PrepareConfig
from zerotune.data.clean import RULES, Cleaner
from zerotune.data.dedup import row_digest
from zerotune.data.formats import FORMATS, DataError, Fields, convert
from zerotune.data.reader import Problem, Record, parse_json
from zerotune.data.rules import RuleError, RuleSet

PII_ACTIONS = {"flag": "flag", "redact": "redact", "drop": "block"}


class Kept(NamedTuple):
    """A row that passed: its encoded line and what the report and the split need of it."""

    line: int
    digest: bytes
    data: bytes | None  # None: holds a lone surrogate, which UTF-8 cannot encode
    category: str | None
    augmented: str | None
    in_len: int
    out_len: int
    messages: list[dict] | None  # left out when the result crosses processes


def load_rules(path: str | None) -> RuleSet:
    """The PII profile: a YAML file, or the shipped one; a bad file is reported like bad data."""
    try:
        return RuleSet.from_yaml(path) if path else RuleSet.default()
    except RuleError as err:
        raise DataError([Problem(path or "rules", None, str(err).removeprefix(f"{path}: "))]) from None


def encode_row(row: dict) -> bytes | None:
    """A canonical row as one UTF-8 JSONL line; None when it holds a lone surrogate, which UTF-8 cannot.

    orjson: the stdlib encoder costs more than all the cleaning rules together on this path.
    """
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return None


def _lengths(messages: list[dict]) -> tuple[int, int]:
    prompt = answer = 0
    for m in messages:
        if m["role"] == "assistant":
            answer += len(m["content"])
        else:
            prompt += len(m["content"])
    return prompt, answer


class RowWork:
    """Per-row work under one config, with the counts the report needs (cleaning, PII)."""

    def __init__(self, cfg: PrepareConfig):
        self.cfg = cfg
        self.fields = Fields(cfg.input_field, cfg.output_field, cfg.category_field)
        self.fixed = cfg.format if cfg.format in FORMATS else None
        self.cleaner = Cleaner(cfg.clean)
        self.rules = None if cfg.pii == "off" else load_rules(cfg.pii_rules).with_action(PII_ACTIONS[cfg.pii])
        self.pii_hits: Counter[str] = Counter()
        self.rows_with_pii = 0

    def line(self, path: str, lineno: int, text: str) -> tuple:
        """The result for one JSONL line."""
        rec = parse_json(path, lineno, text)
        return ("problem", None, lineno, rec) if isinstance(rec, Problem) else self.record(rec)

    def record(self, rec: Record) -> tuple:
        """The result for one parsed record."""
        fmt, row = convert(rec, self.fixed, self.fields)
        if isinstance(row, Problem):
            return "problem", fmt, rec.line, row
        messages, emptied = self.cleaner.messages(row["messages"])
        if emptied:
            return "reject", fmt, rec.line, ("empty_after_cleaning", "no text left after cleaning", emptied)
        if self.rules is not None:
            messages, hits = self.scrub(messages)
            if hits:
                self.rows_with_pii += 1
                self.pii_hits.update(h.rule for h in hits)
                if self.cfg.pii == "drop":
                    names = ", ".join(sorted({h.rule for h in hits}))
                    return "reject", fmt, rec.line, ("pii", f"contains PII: {names}", None)
        out = {"messages": messages}
        for key in ("category", "augmented"):
            if key in row:
                out[key] = row[key]
        kept = Kept(rec.line, row_digest(messages), encode_row(out), row.get("category"), row.get("augmented"),
                    *_lengths(messages), messages)
        return "kept", fmt, rec.line, kept

    def scrub(self, messages: list[dict]) -> tuple[list[dict], list]:
        """Messages with PII redacted (when the action is redact), and every PII match found."""
        out, hits = [], []
        for m in messages:
            verdict = self.rules.apply(m["content"])
            hits += verdict.matches
            out.append({"role": m["role"], "content": verdict.text} if verdict.text != m["content"] else m)
        return (out, hits) if hits else (messages, hits)

    def take_counts(self) -> dict:
        """The counts so far, reset to zero (a worker reports them per batch)."""
        counts = {"changed": dict(self.cleaner.changed), "removed": dict(self.cleaner.removed),
                  "pii_hits": dict(self.pii_hits), "rows_with_pii": self.rows_with_pii}
        self.cleaner.changed, self.cleaner.removed = dict.fromkeys(RULES, 0), dict.fromkeys(RULES, 0)
        self.pii_hits, self.rows_with_pii = Counter(), 0
        return counts

    def add_counts(self, counts: dict) -> None:
        """Fold a worker's counts into these."""
        for name in RULES:
            self.cleaner.changed[name] += counts["changed"][name]
            self.cleaner.removed[name] += counts["removed"][name]
        self.pii_hits.update(counts["pii_hits"])
        self.rows_with_pii += counts["rows_with_pii"]


@functools.lru_cache(maxsize=1)
def _work_for(cfg: PrepareConfig) -> RowWork:
    # One RowWork per worker process and config: building the cleaner's tables takes a moment.
    return RowWork(cfg)


def run_batch(cfg: PrepareConfig, path: str, items: list[tuple[int, str] | Problem]) -> tuple[list[tuple], dict]:
    """Worker entry: results for a batch of (line number, text) or reader Problems, and the batch's counts."""
    work = _work_for(cfg)
    out = []
    for item in items:
        if isinstance(item, Problem):
            out.append(("problem", None, item.line, item))
            continue
        result = work.line(path, *item)
        if result[0] == "kept":  # the messages are in the encoded line already; do not pickle them twice
            result = (*result[:3], result[3]._replace(messages=None))
        out.append(result)
    return out, work.take_counts()
