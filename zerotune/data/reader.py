"""Raw files to records: every byte-level and syntax problem becomes a Problem, never an exception.

Lines are read with a byte limit so one enormous line cannot exhaust memory, decoded strictly so bad
bytes are named rather than silently replaced, and parsed with a hook that refuses duplicate keys
(plain json.loads keeps the last one and loses data without a word).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
RAW_KEEP = 2000  # characters of an unreadable line kept in rejects.jsonl
_BETWEEN_ITEMS = re.compile(r"[\s,]*")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as `file:line: what is wrong (field)`."""

    path: str
    line: int | None
    message: str
    field: str | None = None
    raw: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}" + (f" ({self.field})" if self.field else "")


class Record(NamedTuple):
    """One parsed row and where it came from (a tuple: one is made per input row)."""

    path: str
    line: int
    obj: Any
    raw: str


class _DuplicateKey(ValueError):
    pass


def _pairs_no_dup(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(dup)
    return out


# One decoder object: json.loads with a hook would build a new decoder for every line.
_STRICT = json.JSONDecoder(object_pairs_hook=_pairs_no_dup)
_PLAIN = json.JSONDecoder()


def check_path(path: str) -> Problem | None:
    """The problem with a path given as a data file, if any (missing, a directory, empty)."""
    if os.path.isdir(path):
        return Problem(path, None, "is a directory, not a data file; pass the files inside it")
    if not os.path.exists(path):
        return Problem(path, None, "no such file")
    if not os.access(path, os.R_OK):
        return Problem(path, None, "cannot read the file (permission denied)")
    if os.path.getsize(path) == 0:
        return Problem(path, None, "file is empty (no rows)")
    return None


def _bad_utf8(path: str, lineno: int, data: bytes, err: UnicodeDecodeError) -> Problem:
    raw = data.decode("utf-8", "backslashreplace")[:RAW_KEEP]
    msg = f"not valid UTF-8 (byte 0x{data[err.start]:02x} at byte {err.start + 1}); save the file as UTF-8"
    return Problem(path, lineno, msg, raw=raw)


def _skip_rest(f, limit: int) -> None:
    while True:
        chunk = f.readline(limit)
        if not chunk or chunk.endswith(b"\n"):
            return


def iter_lines(path: str, max_line_bytes: int, warnings: list[str]) -> Iterator[tuple[int, str | Problem]]:
    """Decoded lines without their line ending, numbered from 1.

    Args:
        path: the file.
        max_line_bytes: longer lines are reported and skipped without being held in memory.
        warnings: receives one note per file for a BOM or CRLF endings (both accepted).
    """
    crlf = False
    with open(path, "rb") as f:
        lineno = 0
        while True:
            data = f.readline(max_line_bytes + 1)
            if not data:
                break
            lineno += 1
            if lineno == 1:
                if data.startswith(UTF16_BOMS):
                    yield lineno, Problem(path, None, "file is UTF-16; save it as UTF-8")
                    return
                if data.startswith(UTF8_BOM):
                    warnings.append(f"{path}: starts with a UTF-8 byte-order mark; ignored")
                    data = data[3:]
            if len(data) > max_line_bytes and not data.endswith(b"\n"):
                _skip_rest(f, max_line_bytes)
                raw = data[:RAW_KEEP].decode("utf-8", "backslashreplace") + "..."
                msg = f"line longer than {max_line_bytes} bytes (max_line_bytes)"
                yield lineno, Problem(path, lineno, msg, raw=raw)
                continue
            if data.endswith(b"\r\n"):
                if not crlf:
                    crlf = True
                    warnings.append(f"{path}: Windows (CRLF) line endings; accepted")
                data = data[:-2]
            elif data.endswith(b"\n"):
                data = data[:-1]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                text = _bad_utf8(path, lineno, data, err)
            yield lineno, text


def parse_json(path: str, lineno: int, text: str) -> Record | Problem:
    """One JSON line to a Record, or the Problem that stops it (syntax, duplicate key, not an object)."""
    try:
        obj = _STRICT.decode(text)
    except _DuplicateKey as err:
        return Problem(path, lineno, "duplicate key; the value would be ambiguous", str(err), raw=text)
    except json.JSONDecodeError as err:
        return Problem(path, lineno, f"invalid JSON: {err.msg.removesuffix(' at')} at column {err.colno}", raw=text)
    if not isinstance(obj, dict):
        return Problem(path, lineno, f"row must be a JSON object, got {type(obj).__name__}", raw=text)
    return Record(path, lineno, obj, text)


def jsonl_lines(path: str, max_line_bytes: int, warnings: list[str]) -> Iterator[tuple[int, str] | Problem]:
    """(line number, text) of a JSON Lines file's non-blank lines, unparsed, or the problem reading one."""
    for lineno, text in iter_lines(path, max_line_bytes, warnings):
        if isinstance(text, Problem):
            yield text
        elif text and not text.isspace():
            yield lineno, text


def iter_jsonl(path: str, max_line_bytes: int, warnings: list[str]) -> Iterator[Record | Problem]:
    """Records of a JSON Lines file; blank lines are skipped."""
    for item in jsonl_lines(path, max_line_bytes, warnings):
        yield item if isinstance(item, Problem) else parse_json(path, *item)


def iter_json_array(path: str, warnings: list[str]) -> Iterator[Record | Problem]:
    """Records of a file holding one JSON array of objects (how alpaca_data.json ships); read whole."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(UTF8_BOM):
        warnings.append(f"{path}: starts with a UTF-8 byte-order mark; ignored")
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8; rest of file unread"
        yield Problem(path, data.count(b"\n", 0, err.start) + 1, msg)
        return
    yield from _array_items(path, text)


def _array_items(path: str, text: str) -> Iterator[Record | Problem]:
    pos, line = text.index("[") + 1, 1
    line += text.count("\n", 0, pos)
    while True:
        nxt = _BETWEEN_ITEMS.match(text, pos).end()
        line, pos = line + text.count("\n", pos, nxt), nxt
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            obj, end = _STRICT.raw_decode(text, pos)
        except _DuplicateKey as err:
            end = _PLAIN.raw_decode(text, pos)[1]
            yield Problem(path, line, "duplicate key; the value would be ambiguous", str(err), raw=text[pos:end])
        except json.JSONDecodeError as err:
            msg = f"invalid JSON: {err.msg.removesuffix(' at')} at column {err.colno}; rest of file unread"
            yield Problem(path, err.lineno, msg)
            return
        else:
            kind = type(obj).__name__
            yield (Record(path, line, obj, text[pos:end]) if isinstance(obj, dict)
                   else Problem(path, line, f"array item must be a JSON object, got {kind}", raw=text[pos:end]))
        line, pos = line + text.count("\n", pos, end), end


def iter_csv(path: str, max_line_bytes: int, warnings: list[str]) -> Iterator[Record | Problem]:
    """Records of a CSV (or .tsv) file with a header row; every value is a string."""
    problems: list[Problem] = []
    counter = [0]

    def lines() -> Iterator[str]:
        for lineno, text in iter_lines(path, max_line_bytes, warnings):
            counter[0] = lineno
            if isinstance(text, Problem):
                problems.append(text)
            else:
                yield text + "\n"

    csv.field_size_limit(max_line_bytes)
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    reader = csv.DictReader(lines(), delimiter=delimiter)
    while True:
        start = counter[0] + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append(Problem(path, counter[0], f"unreadable CSV: {err}"))
            continue
        yield from problems
        problems.clear()
        if None in row:
            yield Problem(path, start, "more values than header columns", raw=",".join(map(str, row.values())))
            continue
        values = {k: v for k, v in row.items() if v is not None}
        yield Record(path, start, values, json.dumps(values, ensure_ascii=False))
    yield from problems


def _first_byte(path: str) -> bytes:
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.removeprefix(UTF8_BOM).lstrip()[:1]


def is_jsonl(path: str, fmt: str) -> bool:
    """Whether iter_records would read this path as a readable JSON Lines file."""
    csv_like = fmt == "csv" or path.lower().endswith((".csv", ".tsv"))
    return not csv_like and check_path(path) is None and _first_byte(path) != b"["


def or_empty(path: str, items: Iterator) -> Iterator:
    """The items, or one 'file is empty' Problem when there are none."""
    first = next(items, None)
    if first is None:
        yield Problem(path, None, "file is empty (no rows)")
        return
    yield first
    yield from items  # delegation runs in C: this generator adds nothing per row


def iter_records(path: str, fmt: str, max_line_bytes: int, warnings: list[str]) -> Iterator[Record | Problem]:
    """Records of any supported file: CSV by --format or extension, a JSON array, or JSON Lines.

    Args:
        path: the file.
        fmt: the configured format ("csv" forces CSV; anything else looks at the file).
        max_line_bytes: line size limit.
        warnings: receives accepted-but-odd notes (BOM, CRLF).
    Returns:
        An iterator of Record or Problem, in file order; an empty file yields one Problem.
    """
    bad = check_path(path)
    if bad:
        yield bad
        return
    if fmt == "csv" or path.lower().endswith((".csv", ".tsv")):
        items = iter_csv(path, max_line_bytes, warnings)
    elif _first_byte(path) == b"[":
        items = iter_json_array(path, warnings)
    else:
        items = iter_jsonl(path, max_line_bytes, warnings)
    yield from or_empty(path, items)
