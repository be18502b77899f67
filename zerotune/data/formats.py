"""The input formats zerotune reads and the one canonical row they all become.

Canonical row: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}, plus
"category" when the source row had one and "augmented" on rows made by augmentation. Formats:

    io        {"input": ..., "output": ..., "system"?: ...}        (field names configurable)
    alpaca    {"instruction": ..., "input"?: ..., "output": ...}
    messages  {"messages": [{"role": ..., "content": ...}, ...]}    (OpenAI style)
    sharegpt  {"conversations": [{"from": "human"|"gpt"|..., "value": ...}, ...]}
    csv       a header row naming the io or alpaca fields
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from zerotune.data.reader import Problem, Record, iter_records

FORMATS = ("io", "alpaca", "messages", "sharegpt")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant", "bing": "assistant"}


class DataError(ValueError):
    """The input cannot be used as given; the message is one `file:line: problem (field)` per line."""

    def __init__(self, problems: list[Problem] | str, total: int | None = None, hint: str | None = None):
        # A plain message is accepted too, for callers that have one problem and no line to name.
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.total = len(self.problems) if total is None else total
        lines = [str(p) for p in self.problems]
        if self.total > len(lines):
            lines.append(f"... and {self.total - len(lines)} more problems ({self.total} in all)")
        super().__init__("\n".join(lines + ([hint] if hint else [])))


class RowError(ValueError):
    """A parsed row that does not fit its format; field names the offending key."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


@dataclass(frozen=True)
class Fields:
    """Which keys carry what: the io/CSV column mapping and the category key."""

    input: str = "input"
    output: str = "output"
    category: str | None = None


def detect(obj: dict, fields: Fields) -> str | None:
    """The format one row is written in, from its keys; None when no format fits."""
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj:
        return "alpaca"
    if fields.input in obj or fields.output in obj:
        return "io"
    return None


def _text(obj: dict, key: str, field: str | None = None, *, required: bool = True) -> str:
    field = field or key
    if key not in obj or obj[key] is None:
        if required:
            raise RowError("missing field", field)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise RowError(f"wrong type: expected a string, got {type(value).__name__}", field)
    if required and (not value or value.isspace()):
        raise RowError("empty field", field)
    return value


def _io(obj: dict, fields: Fields) -> list[dict]:
    user, assistant = _text(obj, fields.input), _text(obj, fields.output)
    system = _text(obj, "system", required=False)
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _alpaca(obj: dict, fields: Fields) -> list[dict]:
    instruction, extra = _text(obj, "instruction"), _text(obj, "input", required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = _text(obj, "system", required=False)
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": _text(obj, "output")}]


def _turns(obj: dict, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[dict]:
    turns = obj[key]
    if not isinstance(turns, list):
        raise RowError(f"wrong type: expected a list, got {type(turns).__name__}", key)
    if not turns:
        raise RowError("empty list", key)
    out = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(f"wrong type: expected an object, got {type(turn).__name__}", where)
        role = _text(turn, role_key, f"{where}.{role_key}")
        if role not in roles:
            raise RowError(f"unknown role {role!r}; expected one of {', '.join(sorted(roles))}", f"{where}.{role_key}")
        out.append({"role": roles[role], "content": _text(turn, text_key, f"{where}.{text_key}")})
    _check_order(out, key, role_key)
    return out


def _check_order(messages: list[dict], key: str, role_key: str) -> None:
    for i, m in enumerate(messages):
        if m["role"] == "system" and i > 0:
            raise RowError("a system message may only come first", f"{key}[{i}].{role_key}")
    if not any(m["role"] == "user" for m in messages):
        raise RowError("no user message", key)
    if messages[-1]["role"] != "assistant":
        raise RowError("last message must be the assistant's (nothing to learn otherwise)",
                       f"{key}[{len(messages) - 1}].{role_key}")


def _messages(obj: dict, fields: Fields) -> list[dict]:
    return _turns(obj, "messages", "role", "content", {r: r for r in ROLES})


def _sharegpt(obj: dict, fields: Fields) -> list[dict]:
    return _turns(obj, "conversations", "from", "value", SHAREGPT_ROLES)


CONVERTERS = {"io": _io, "alpaca": _alpaca, "messages": _messages, "sharegpt": _sharegpt}


def _category(obj: dict, fields: Fields) -> str | None:
    key = fields.category or "category"
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(f"wrong type: expected a string, got {type(value).__name__}", key)
    return str(value).strip() or None


def to_row(obj: dict, fmt: str, fields: Fields) -> dict:
    """One parsed row of a known format to a canonical row.

    Raises:
        RowError: the row is missing a field, has a wrong type or an unusable conversation.
    """
    row: dict[str, Any] = {"messages": CONVERTERS[fmt](obj, fields)}
    category = _category(obj, fields)
    if category is not None:
        row["category"] = category
    if isinstance(obj.get("augmented"), str):
        row["augmented"] = obj["augmented"]
    return row


def _unknown(rec: Record, fields: Fields) -> Problem:
    keys = ", ".join(map(repr, list(rec.obj)[:8])) or "none"
    msg = (f"cannot tell the format: expected {fields.input!r}/{fields.output!r}, 'instruction'/'output', "
           f"'messages' or 'conversations' keys; found {keys} (other names: set input_field/output_field)")
    return Problem(rec.path, rec.line, msg, "format", raw=rec.raw)


class FormatGate:
    """Holds a file to one format: the first row whose format is known decides it.

    Args:
        path: the file, for problem messages.
        allow_mixed: let rows of other formats through instead of reporting them.
    """

    def __init__(self, path: str, allow_mixed: bool = False):
        self.path, self.allow_mixed = path, allow_mixed
        self.fmt: str | None = None
        self.first_line = 0

    def check(self, line: int, row_fmt: str, raw: str) -> Problem | None:
        """The mixed-format problem of a row, or None when its format is the file's."""
        if self.fmt is None:
            self.fmt, self.first_line = row_fmt, line
        elif row_fmt != self.fmt and not self.allow_mixed:
            msg = (f"mixed formats: this row is {row_fmt} but the file is {self.fmt} (line {self.first_line}); "
                   "use one format")
            return Problem(self.path, line, msg, "format", raw=raw)
        return None


def convert(rec: Record, fixed: str | None, fields: Fields) -> tuple[str | None, dict | Problem]:
    """A record's format and canonical row, or its format (None if unknown) and the problem with it."""
    row_fmt = fixed or detect(rec.obj, fields)
    if row_fmt is None:
        return None, _unknown(rec, fields)
    try:
        return row_fmt, to_row(rec.obj, row_fmt, fields)
    except RowError as err:
        return row_fmt, Problem(rec.path, rec.line, err.message, err.field, raw=rec.raw)


def iter_rows(path: str, fmt: str = "auto", fields: Fields = Fields(), *, max_line_bytes: int = 1_000_000,
              allow_mixed: bool = False, warnings: list[str] | None = None
              ) -> Iterator[tuple[Record, dict, str] | Problem]:
    """Canonical rows of one file, streamed, with the problem of each row that cannot be used.

    Args:
        path: the data file.
        fmt: "auto" detects per file (the first usable row decides), any other forces that format.
        fields: key mapping.
        max_line_bytes: longer lines are rejected.
        allow_mixed: accept rows of another format than the file's first row instead of reporting them.
        warnings: receives notes on accepted oddities (BOM, CRLF).
    Returns:
        An iterator of (record, canonical row, format) or Problem, in file order.
    """
    fixed = fmt if fmt in FORMATS else None
    gate = FormatGate(path, allow_mixed)
    for rec in iter_records(path, fmt, max_line_bytes, [] if warnings is None else warnings):
        if isinstance(rec, Problem):
            yield rec
            continue
        row_fmt, row = convert(rec, fixed, fields)
        mixed = gate.check(rec.line, row_fmt, rec.raw) if row_fmt else None
        if mixed is not None:
            yield mixed
        elif isinstance(row, Problem):
            yield row
        else:
            yield rec, row, row_fmt


def read_examples(path: str, fmt: str = "auto", *, input_field: str = "input", output_field: str = "output",
                  category_field: str | None = None, max_errors: int = 50) -> list[dict]:
    """Every row of a data file as a canonical row, or a DataError listing what is wrong.

    Args:
        path: a JSONL/JSON/CSV file in any supported format (prepare's train.jsonl included).
        fmt: "auto" or one of io, alpaca, messages, sharegpt, csv.
        input_field: io/CSV input key.
        output_field: io/CSV output key.
        category_field: key passed through as "category" (default "category").
        max_errors: problems listed in the error before the rest are only counted.
    Returns:
        Canonical rows: {"messages": [...], "category"?: str, "augmented"?: str}.
    Raises:
        DataError: any row (or the file itself) is unusable; all problems are counted.
    """
    fields = Fields(input_field, output_field, category_field)
    rows, problems, total = [], [], 0
    for item in iter_rows(path, fmt, fields):
        if isinstance(item, Problem):
            total += 1
            if len(problems) < max_errors:
                problems.append(item)
        else:
            rows.append(item[1])
    if total:
        raise DataError(problems, total)
    return rows
