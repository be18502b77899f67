"""Copy slots: the parts of a row's answer copied verbatim from its question.

Extraction tasks mostly copy: a name, an order number, a symptom. A model that sees few distinct
values in such a slot learns the values instead of the copying, and fails on new ones. This module
finds the slots (detect_slots), measures how varied they are (slot_coverage) and rewrites a row with
other values in the same places, question and answer alike (rewrite); swap.py builds on it.

Where the answer is structured, its fields are the candidates:

    JSON        {"name": "Lucas Schmidt", "order_id": "232946"}    name: key path (a.b, items[].name)
    key:value   性别:女;年龄:43;症状:背痛  (also "k=v", "k: v, k: v") name: the key
    plain text  substrings of >= SPAN_MIN characters also in the question   name: "span"

A value of at least MIN_VALUE characters is copied in a row when it stands in the last user message
without continuing a word or number there. Over a data set, a JSON or key:value field is a copy field
when nearly every row copies it: a label such as "late" that some messages happen to contain is mapped,
not copied. Free-text spans are reported but are not copy fields.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Iterable, NamedTuple

SPAN = "span"  # the slot name of copied substrings of free-text answers
MIN_VALUE = 2  # one character (男, 轻, a grade letter) is a label, and too short to find unambiguously
SPAN_MIN = 4  # shorter common substrings of free text are mostly chance (function words, particles)
MAX_SPAN_TEXT = 4000  # longer free-text answers are not scanned for spans (quadratic search)
COPY_RATE = 0.95  # a field copied in fewer of its rows is mapped from wording, not copied
MIN_ROW_SHARE = 0.1  # slots in fewer rows are chance matches; they never drive augmentation
MIN_ROWS = 3  # ... and in at least this many rows
# A copy field whose values repeat this much is one a model can memorise instead of copying.
MEMORISE_DISTINCT, MEMORISE_RATIO, MEMORISE_TOP = 20, 0.25, 0.3

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_ONLY_CJK = re.compile(f"[{_CJK}]+")
_LETTER = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"  # ASCII and accented Latin letters
_LATIN = re.compile(f"[{_LETTER}]+(?:[ '\\-][{_LETTER}]+)*")
_SPAN_CHAR = re.compile(r"[\w '\-]")  # a span never crosses other punctuation: 订单，地址 is two values
_EDGE = re.compile(r"^\W+|\W+$")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_COLON = re.compile(r"\s*:")
_KV_SEPARATORS = ("\n;；", ",，")
_KV_FIELD = re.compile(r"\s*([^:：=]{1,24}?)\s*[:：=]\s*(.*?)\s*", re.S)


class Slot(NamedTuple):
    """One copied value of a row: which field it fills, the value, and its kind."""

    name: str
    value: str
    kind: str  # "digits", "latin", "cjk" or "mixed"


def value_kind(value: str) -> str:
    """digits (ASCII), latin (Latin-letter words joined by space, hyphen, apostrophe), cjk (Han only) or mixed."""
    if value.isascii() and value.isdigit():
        return "digits"
    if _LATIN.fullmatch(value):
        return "latin"
    return "cjk" if _ONLY_CJK.fullmatch(value) else "mixed"


def turn(row: dict) -> tuple[str, str] | None:
    """(question, answer): the last assistant message and the user message before it; None if none."""
    msgs = row["messages"]
    answer = next((a for a in range(len(msgs) - 1, -1, -1) if msgs[a]["role"] == "assistant"), None)
    if answer is None:
        return None
    question = next((u for u in range(answer - 1, -1, -1) if msgs[u]["role"] == "user"), None)
    return None if question is None else (msgs[question]["content"], msgs[answer]["content"])


def _alnum(c: str) -> bool:
    """A letter or digit that joins its neighbours into one word (Han characters do not)."""
    return c.isalnum() and not _CJK_CHAR.match(c)


def occurrences(text: str, value: str) -> list[int]:
    """Starts of `value` in `text` where it does not continue a word or a number.

    "cook" in "cooker" or "12" in "4123" is part of something else: replacing it there would change
    text that is not the value. Han text has no word boundaries to check.
    """
    found, i = [], text.find(value)
    while i >= 0:
        end = i + len(value)
        if not (_alnum(value[0]) and i > 0 and _alnum(text[i - 1])) and \
                not (_alnum(value[-1]) and end < len(text) and _alnum(text[end])):
            found.append(i)
        i = text.find(value, i + 1)
    return found


def _leaves(obj, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for value in obj:
            yield from _leaves(value, f"{path}[]")
    elif isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, int) and not isinstance(obj, bool):
        yield path, str(obj)


def _kv_fields(answer: str) -> list[tuple[str, int, int]] | None:
    """(key, value start, value end) of a `key:value;key:value` answer; None when it is not one."""
    for separators in _KV_SEPARATORS:
        found = []
        for piece in re.finditer(f"[^{separators}]+", answer):
            if piece.group().isspace():
                continue
            m = _KV_FIELD.fullmatch(piece.group())
            if m is None or not m.group(1).strip():
                break
            found.append((m.group(1), piece.start() + m.start(2), piece.start() + m.end(2)))
        else:
            if len(found) >= 2:
                return found
    return None


def structure(answer: str) -> tuple[str, object]:
    """("json", parsed), ("kv", fields as _kv_fields gives them) or ("text", None)."""
    if answer.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = None
        if isinstance(parsed, (dict, list)):
            return "json", parsed
    kv = _kv_fields(answer)
    return ("kv", kv) if kv else ("text", None)


def _spans(question: str, answer: str) -> list[str]:
    """Greedy longest substrings of the answer, starting and ending at word edges, found in the question."""
    found, i, n = [], 0, len(answer)
    if n > MAX_SPAN_TEXT:
        return found
    while i < n:
        if not answer[i].isalnum() or (i and _alnum(answer[i]) and _alnum(answer[i - 1])):
            i += 1
            continue
        j = i + 1
        while j <= n and _SPAN_CHAR.match(answer[j - 1]) and answer[i:j] in question:
            j += 1
        end = j - 1
        if end < n and end > i and _alnum(answer[end - 1]) and _alnum(answer[end]):
            while end > i and _alnum(answer[end - 1]):  # cut back to the last whole word
                end -= 1
        span = _EDGE.sub("", answer[i:end])
        if len(span) >= SPAN_MIN and occurrences(question, span) and occurrences(answer, span):
            found.append(span)
            i = answer.index(span, i) + len(span)
        else:
            i += 1
    return found


def answer_pairs(answer: str) -> list[tuple[str, str]] | None:
    """(field, value) of every value of a JSON or key:value answer; None for free text."""
    kind, parsed = structure(answer)
    if kind == "json":
        return list(_leaves(parsed))
    if kind == "kv":
        return [(key, answer[start:end]) for key, start, end in parsed]
    return None


def fields(question: str, answer: str) -> list[tuple[str, str, bool]]:
    """(name, value, copied) of every candidate value of the answer of MIN_VALUE characters or more."""
    pairs = answer_pairs(answer)
    if pairs is None:
        return [(SPAN, span, True) for span in dict.fromkeys(_spans(question, answer))]
    out = [(name, value, bool(occurrences(question, value))) for name, value in pairs if len(value) >= MIN_VALUE]
    return list(dict.fromkeys(out))


def detect_slots(row: dict) -> list[Slot]:
    """The copy slots of a canonical row: answer values that stand verbatim in its (last) question.

    Args:
        row: {"messages": [...]} with at least one user and one assistant message.
    Returns:
        Slots in the order the answer holds them, each (name, value) once.
    """
    pair = turn(row)
    if pair is None:
        return []
    return [Slot(name, value, value_kind(value)) for name, value, copied in fields(*pair) if copied]


def slot_coverage(rows: list[dict], eval_rows: list[dict] = ()) -> dict:
    """How often each field is copied and how varied its values are, with a memorisation warning.

    Args:
        rows: canonical train rows.
        eval_rows: held-out rows; their values are compared with train's (seen before or not).
    Returns:
        {"rows": n, "rows_with_slots": m, "slots": {name: {kind, rows, field_rows, copy_rate, copy_field,
        distinct, top, top_share, memorise_risk, eval_rows, eval_unseen}}}, copy fields first.
    """
    per_row = [fields(*pair) if (pair := turn(row)) else [] for row in rows]
    slots = {}
    for name, s in _collect(per_row).items():
        copied = sum(s["values"].values())
        top = s["values"].most_common(5)
        entry = {"kind": s["kinds"].most_common(1)[0][0] if s["kinds"] else "none", "rows": s["rows"],
                 "field_rows": s["field_rows"], "copy_rate": s["rows"] / s["field_rows"],
                 "distinct": len(s["values"]), "top": [[v, c] for v, c in top],
                 "top_share": top[0][1] / copied if top else 0.0}
        # Free-text spans are reported only: spans of different rows are not values of one field, and
        # nothing measured says that swapping them helps.
        entry["copy_field"] = name != SPAN and entry["copy_rate"] >= COPY_RATE and \
            s["rows"] >= max(MIN_ROWS, MIN_ROW_SHARE * len(rows))
        entry["memorise_risk"] = entry["copy_field"] and (
            entry["distinct"] < MEMORISE_DISTINCT or entry["distinct"] < MEMORISE_RATIO * s["rows"]
            or entry["top_share"] > MEMORISE_TOP)
        slots[name] = entry
    _compare_eval(slots, per_row, eval_rows)
    order = sorted(slots, key=lambda n: (not slots[n]["copy_field"], -slots[n]["rows"]))
    with_slots = sum(any(c and slots[n]["copy_field"] for n, _, c in found) for found in per_row)
    return {"rows": len(rows), "rows_with_slots": with_slots, "slots": {n: slots[n] for n in order}}


def _collect(per_row: list[list[tuple[str, str, bool]]]) -> dict:
    stats = defaultdict(lambda: {"field_rows": 0, "rows": 0, "values": Counter(), "kinds": Counter()})
    for found in per_row:
        names, copied_names = dict.fromkeys(n for n, _, _ in found), {n for n, _, c in found if c}  # keep order
        for name in names:
            stats[name]["field_rows"] += 1
            stats[name]["rows"] += name in copied_names
        for name, value, copied in found:
            if copied:
                stats[name]["values"][value] += 1
                stats[name]["kinds"][value_kind(value)] += 1
    return stats


def _compare_eval(slots: dict, per_row: list, eval_rows: list[dict]) -> None:
    train_values = defaultdict(set)
    for found in per_row:
        for name, value, copied in found:
            if copied:
                train_values[name].add(value)
    eval_values = defaultdict(list)
    for row in eval_rows:
        for slot in detect_slots(row):
            eval_values[slot.name].append(slot.value)
    for name, entry in slots.items():
        values = eval_values.get(name, [])
        entry["eval_rows"] = len(values)
        entry["eval_unseen"] = sum(v not in train_values[name] for v in values) / len(values) if values else None


def copy_fields(coverage: dict) -> list[str]:
    """Names of the fields slot_coverage judged copied in nearly every row (the ones to augment)."""
    return [name for name, entry in coverage["slots"].items() if entry["copy_field"]]


def slot_values(rows: Iterable[dict], names: Iterable[str]) -> set[str]:
    """Every copied value of the named slots in the rows (used to keep eval values out of train)."""
    wanted = set(names)
    return {s.value for row in rows for s in detect_slots(row) if s.name in wanted}


def keeps_copies(row: dict, names: Iterable[str]) -> bool:
    """False when a named copy field's value is no longer in the question (a paraphrase lost it)."""
    wanted, pair = set(names), turn(row)
    return pair is None or all(copied for name, _, copied in fields(*pair) if name in wanted)


def cjk_share(rows: Iterable[dict]) -> float:
    """Han characters among the letters (Han + ASCII letters) of the rows' questions; 0 when none."""
    han = latin = 0
    for row in rows:
        pair = turn(row)
        if pair:
            han += len(_CJK_CHAR.findall(pair[0]))
            latin += sum(c.isascii() and c.isalpha() for c in pair[0])
    return han / (han + latin) if han + latin else 0.0


def replace_values(text: str, mapping: dict[str, str]) -> str | None:
    """Text with every stand-alone occurrence of each mapping key replaced by its value.

    Returns:
        The new text, or None when two values overlap in the text (which one stands there is unclear).
    """
    hits = sorted((i, i + len(old), new) for old, new in mapping.items() for i in occurrences(text, old))
    out, pos = [], 0
    for start, end, new in hits:
        if start < pos:
            return None
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:]


def _literal(token: str, mapping: dict[str, str]) -> str | None:
    """A JSON string literal with the mapping applied, escaped the way the original was."""
    text = json.loads(token)
    new = replace_values(text, mapping)
    if new is None or new == text:
        return new if new is None else token
    for ascii_only in (False, True):
        if json.dumps(text, ensure_ascii=ascii_only) == token:
            return json.dumps(new, ensure_ascii=ascii_only)
    return None  # escapes json.dumps would not write (e.g. "\/"): leave such rows alone


def _rewrite_answer(answer: str, mapping: dict[str, str]) -> str | None:
    """The answer with the mapping applied to its values only: never to JSON keys or key:value keys."""
    kind, parsed = structure(answer)
    if kind == "text":
        return replace_values(answer, mapping)
    if kind == "kv":
        regions = [(start, end, lambda t: replace_values(t, mapping)) for _, start, end in parsed]
    else:
        regions = [(m.start(), m.end(), (lambda t: _literal(t, mapping)) if m.group()[0] == '"'
                    else (lambda t: mapping.get(t, t)))
                   for m in _JSON_TOKEN.finditer(answer)
                   if m.group()[0] != '"' or not _COLON.match(answer, m.end())]
    out, pos = [], 0
    for start, end, edit in regions:
        new = edit(answer[start:end])
        if new is None:
            return None
        out += [answer[pos:start], new]
        pos = end
    return "".join(out) + answer[pos:]


def rewrite(row: dict, mapping: dict[str, str]) -> dict | None:
    """A copy of a single-turn row with copied values replaced in question and answer alike.

    Args:
        row: canonical row of [system,] user, assistant messages.
        mapping: old value -> new value; each old value must stand in the question.
    Returns:
        The new row (its category kept), or None when the swap would not be clean: a multi-turn row,
        a value in the system prompt, overlapping values, or a new value that does not end up in the
        question.
    """
    msgs = row["messages"]
    roles = [m["role"] for m in msgs]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]) or not mapping:
        return None
    if roles[0] == "system" and any(old in msgs[0]["content"] for old in mapping):
        return None
    question = replace_values(msgs[-2]["content"], mapping)
    answer = _rewrite_answer(msgs[-1]["content"], mapping)
    if question is None or answer is None or not all(occurrences(question, new) for new in mapping.values()):
        return None
    new = {"messages": msgs[:-2] + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    if "category" in row:
        new["category"] = row["category"]
    return new
