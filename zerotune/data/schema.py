"""The answer schema a training set teaches, and a matcher that keeps generated answers to it.

An extraction task's answers share one shape: the same JSON keys in the same order, or the same
`key:value;key:value` fields. Each field either copies a span of the question (a name, an order id, a
symptom) or picks one of a few labels (late, refund; 男, 轻). A small model trained on a few hundred
rows still drifts from that shape on unseen inputs: it writes a label it never saw ("void" for cancel,
"中等" for 中), a span that is not in the question ("sleement" for sewing machine), half a word
("juice" for juicer) or loses the structure. infer_schema reads the shape off the training answers;
Matcher tells, for any answer prefix, which bytes may come next, so that decoding
(zerotune.models.constrain) can keep every answer to it:

    literal text      the keys and separators, exactly as training wrote them
    label field       one of the values training used for it
    copy field        a span of the question that starts and ends at word edges, or one of the few
                      values training wrote for it when the question had none (null, 无)

Answers with free-text fields get no schema: nothing here can say what free text may contain.
The matcher works on UTF-8 bytes, because byte-level tokenizers split a Han character over tokens.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from zerotune.data.slots import MIN_VALUE, _alnum, occurrences, structure, turn

MAX_LABELS = 32  # a field with more distinct (non-copied) values than this is free text
LABEL_REPEAT = 3  # ... or whose values are not seen this many times each on average
COPY_SHARE = 0.5  # a field copied in at least this share of rows is a copy field
CONFORM = 0.98  # share of rows that must follow the schema for one to be inferred
MIN_ROWS = 5
SPAN_PEEK = 4  # bytes of a copied span looked ahead from the literal before it ...
LITERAL_TAIL = 2  # ... unless at most this many bytes of the literal are left: then the whole lookahead
_JSON_STYLES = ((", ", ": "), (",", ":"))


@dataclass(frozen=True)
class Field:
    """One value place of the answer."""

    name: str
    labels: tuple[str, ...]  # value texts as the answer writes them ("\"late\"", "null", "无")
    copy: bool  # may also be a span of the question
    quote: str  # what encloses a copied span ('"' in JSON strings, '' elsewhere)
    stops: tuple[str, ...]  # texts a copied span may not contain
    digits: bool = False  # a copied span is a whole number (JSON numbers; strings that were all digits)


@dataclass(frozen=True)
class Schema:
    """literals[i] stands before fields[i]; literals[-1] closes the answer."""

    kind: str  # "json" or "kv"
    literals: tuple[str, ...]
    fields: tuple[Field, ...]
    rows: int  # training rows it was read from
    skipped: int  # rows that did not follow it
    disjoint: bool = False  # copy fields never shared a piece of the question in training

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @staticmethod
    def from_json(text: str) -> "Schema":
        raw = json.loads(text)
        fields = tuple(Field(**{**f, "labels": tuple(f["labels"]), "stops": tuple(f["stops"])}) for f in raw["fields"])
        return Schema(raw["kind"], tuple(raw["literals"]), fields, raw["rows"], raw["skipped"],
                      raw.get("disjoint", False))

    def describe(self) -> str:
        labels = [f.name for f in self.fields if not f.copy]
        copies = [f.name for f in self.fields if f.copy]
        return (f"{self.kind} answers with fields {', '.join(f.name for f in self.fields)}: labels "
                f"{', '.join(labels) or '-'}; copied from the question {', '.join(copies) or '-'}")


# ------------------------------------------------------------------------------------------ inference

def _json_layout(answer: str, parsed) -> tuple[tuple[str, ...], list[str], bool] | None:
    """(literals, value texts, ensure_ascii) when `answer` is json.dumps of a flat object in one style."""
    if not isinstance(parsed, dict) or not parsed or \
            any(not (v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)))
                for v in parsed.values()):
        return None
    text = answer.strip()
    for item_sep, key_sep in _JSON_STYLES:
        for ascii_only in (False, True):
            if json.dumps(parsed, ensure_ascii=ascii_only, separators=(item_sep, key_sep)) != text:
                continue
            keys = [json.dumps(k, ensure_ascii=ascii_only) for k in parsed]
            literals = ["{" + keys[0] + key_sep] + [item_sep + k + key_sep for k in keys[1:]] + ["}"]
            return tuple(literals), [json.dumps(v, ensure_ascii=ascii_only) for v in parsed.values()], ascii_only
    return None


def _kv_layout(answer: str, fields) -> tuple[tuple[str, ...], list[str]]:
    bounds = [0] + [b for _, start, end in fields for b in (start, end)] + [len(answer)]
    pieces = [answer[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    return tuple(pieces[0::2]), pieces[1::2]


def _layout(answer: str) -> tuple[str, tuple[str, ...], list[str]] | None:
    kind, parsed = structure(answer)
    if kind == "json":
        found = _json_layout(answer, parsed)
        return None if found is None else ("json", found[0], found[1])
    if kind == "kv":
        literals, values = _kv_layout(answer, parsed)
        return "kv", literals, values
    return None


def _copied(question: str, text: str, kind: str) -> str | None:
    """The span a value text copies from the question, or None."""
    value = text
    if kind == "json":
        value = json.loads(text)
        if value is None:
            return None
        value = str(value)
    if len(value) < MIN_VALUE:
        return None  # one character (男, 轻) is a label, and too short to find unambiguously
    return value if occurrences(question, value) else None


def _field(name: str, kind: str, texts: list[str], copied: list[bool], next_literal: str) -> Field | None:
    n = len(texts)
    given = sum(1 for t in texts if t != "null") or 1  # an optional field is copied whenever it is given
    share = sum(copied) / given
    kept = Counter(t for t, c in zip(texts, copied) if share < COPY_SHARE or not c)
    if len(kept) > MAX_LABELS or (share < COPY_SHARE and len(kept) * LABEL_REPEAT > n):
        return None  # free text
    copy = share >= COPY_SHARE
    quote, digits = "", False
    if copy and kind == "json":
        copied_texts = [t for t, c in zip(texts, copied) if c]
        quote = '"' if all(t.startswith('"') for t in copied_texts) else ""
        digits = not quote
        if not quote and not all(t.lstrip("-").isdigit() for t in copied_texts):
            return None
        if quote and any(json.loads(t) != t[1:-1] for t in copied_texts):
            return None  # escaped in the answer (\u00eb, \"): the bytes differ from the question's
    if copy and not digits:  # every copied value a number (an age, an order id): copy numbers only
        values = [t[len(quote):len(t) - len(quote)] for t, c in zip(texts, copied) if c]
        digits = bool(values) and all(v.isdigit() for v in values)
    stops = ('"', "\\", "\n") if quote else tuple(s for s in (next_literal[:1], "\n") if s)
    return Field(name, tuple(sorted(kept)), copy, quote, stops, digits)


def infer_schema(rows: list[dict]) -> tuple[Schema | None, str]:
    """The schema of the rows' answers, or None and why there is none.

    Args:
        rows: canonical {"messages": ...} rows (augmented copies are ignored).
    Returns:
        (schema, reason): schema None when the answers are free text, have no common shape, or a field
        holds free text; reason says which.
    """
    pairs = [p for r in rows if not r.get("augmented") and (p := turn(r)) is not None]
    if len(pairs) < MIN_ROWS:
        return None, f"only {len(pairs)} rows"
    layouts = [_layout(answer) for _, answer in pairs]
    shapes = Counter((lay[0], lay[1]) for lay in layouts if lay is not None)
    if not shapes:
        return None, "answers are free text"
    (kind, literals), count = shapes.most_common(1)[0]
    if count < CONFORM * len(pairs):
        return None, f"only {count} of {len(pairs)} answers share one structure"
    keep = [(q, lay[2]) for (q, _), lay in zip(pairs, layouts) if lay is not None and (lay[0], lay[1]) == (kind, literals)]
    fields = []
    for i in range(len(literals) - 1):
        texts = [values[i] for _, values in keep]
        copied = [_copied(q, t, kind) is not None for (q, _), t in zip(keep, texts)]
        name = literals[i].strip("{,;\n :：；，=\"")
        field = _field(name or f"field{i}", kind, texts, copied, literals[i + 1])
        if field is None:
            return None, f"field {name!r} holds free text or escaped copies"
        fields.append(field)
    return Schema(kind, literals, tuple(fields), len(pairs), len(pairs) - count, _disjoint(keep, fields, kind)), "ok"


def _disjoint(keep: list[tuple[str, list[str]]], fields: list[Field], kind: str) -> bool:
    """Whether the copy fields of every row could take separate pieces of its question (two copied values
    that overlap wherever they occur, or the same value twice, say no)."""
    copies = [i for i, f in enumerate(fields) if f.copy]
    if len(copies) < 2:
        return False
    for question, values in keep:
        spans = []
        for i in copies:
            value = _copied(question, values[i], kind)
            if value is not None:
                spans.append([(p, p + len(value)) for p in occurrences(question, value)])
        for a in range(len(spans)):
            for b in range(a + 1, len(spans)):
                if all(x < d and c < y for x, y in spans[a] for c, d in spans[b]):
                    return False
    return True


# ------------------------------------------------------------------------------------------- matching

def _char_start(q: bytes, i: int) -> bool:
    return i >= len(q) or not 0x80 <= q[i] < 0xC0


_EDGE_PUNCT = set(" \t\r\n,.;:!?，。；：！？、")  # a copied span never starts or ends on these


def _edges(question: str) -> tuple[dict[int, str], dict[int, str]]:
    """(character starting at each byte offset, character ending at each byte offset) of the question."""
    starting, ending, at = {}, {}, 0
    for ch in question:
        starting[at] = ch
        at += len(ch.encode("utf-8"))
        ending[at] = ch
    return starting, ending


def _overlaps(start: int, end: int, taken: tuple) -> bool:
    return any(start < b and a < end for a, b in taken)


def _joins(a: str | None, b: str | None) -> bool:
    """Two neighbouring characters of one word (Latin letters, digits; Han characters join nothing)."""
    return a is not None and b is not None and _alnum(a) and _alnum(b)


class Matcher:
    """Which bytes may follow an answer prefix, for one question.

    A state is ("lit", i, offset, taken) inside literal i, ("val", i, text, taken) inside field i's value,
    or ("end",). `taken` holds the byte spans of the question that earlier fields copied (when the schema
    is disjoint and the copy could only come from there): a later copy may not overlap them.
    """

    def __init__(self, schema: Schema, question: str, lookahead: int = 24):
        self.q = question.encode("utf-8")
        self.lits = [lit.encode("utf-8") for lit in schema.literals]
        self.fields = schema.fields
        self.labels = [[t.encode("utf-8") for t in f.labels] for f in schema.fields]
        self.quotes = [f.quote.encode("utf-8") for f in schema.fields]
        self.stops = [[s.encode("utf-8") for s in f.stops] for f in schema.fields]
        self.depth = lookahead
        self.starting, self.ending = _edges(question)
        self.disjoint = schema.disjoint
        self._memo: dict = {}  # (what, field, room..., taken) -> continuations that depend on no other prefix

    # -- copies -------------------------------------------------------------------------------
    def _starts(self, i: int, body: bytes, taken: tuple = ()) -> list[int]:
        """Where in the question a copied span beginning with `body` may start."""
        if not self._body_ok(i, body):
            return []
        q, out, at = self.q, [], self.q.find(body)
        while at >= 0:
            if self._can_start(at) and not _overlaps(at, at + len(body), taken):
                out.append(at)
            at = q.find(body, at + 1)
        return out

    def _can_start(self, at: int) -> bool:
        first = self.starting.get(at)
        return first is not None and first not in _EDGE_PUNCT and not _joins(self.ending.get(at), first)

    def _can_end(self, end: int) -> bool:
        last = self.ending.get(end)
        return last is not None and last not in _EDGE_PUNCT and not _joins(last, self.starting.get(end))

    def _ends(self, i: int, body: bytes, taken: tuple) -> list[int]:
        """Starts of the places a complete copied span `body` may come from."""
        return [p for p in self._starts(i, body, taken) if self._can_end(p + len(body))] if body else []

    def _took(self, places: list[int], body: bytes, taken: tuple) -> tuple:
        """`taken` after a copy of `body` from one of `places`: grown only when the place is certain."""
        if not self.disjoint or len(places) != 1:
            return taken
        return tuple(sorted(taken + ((places[0], places[0] + len(body)),)))

    # -- states -------------------------------------------------------------------------------
    def _at_literal(self, text: bytes, pos: int, i: int, taken: tuple = ()) -> set:
        lit, rest = self.lits[i], text[pos:]
        if len(rest) < len(lit):
            return {("lit", i, len(rest), taken)} if lit.startswith(rest) else set()
        if not rest.startswith(lit):
            return set()
        if i == len(self.fields):
            return {("end",)} if pos + len(lit) == len(text) else set()
        return self._at_value(text, pos + len(lit), i, taken)

    def _at_value(self, text: bytes, pos: int, i: int, taken: tuple) -> set:
        rest, out = text[pos:], set()
        for label in self.labels[i]:
            if rest.startswith(label):
                out |= self._at_literal(text, pos + len(label), i + 1, taken)
            elif label.startswith(rest):
                out.add(("val", i, rest, taken))
        if self.fields[i].copy:
            out |= self._copy_states(text, pos, i, taken)
        return out

    def _copy_states(self, text: bytes, pos: int, i: int, taken: tuple) -> set:
        quote, rest = self.quotes[i], text[pos:]
        if len(rest) <= len(quote) and quote.startswith(rest) and (rest or quote):
            return {("val", i, rest, taken)}
        if not rest.startswith(quote):
            return set()
        tail = rest[len(quote):]
        if quote:
            end = tail.find(quote)
            body = tail if end < 0 else tail[:end]
        else:
            sep = self.lits[i + 1].decode("utf-8")[:1].encode("utf-8")
            end = tail.find(sep) if sep else -1
            body = tail if end < 0 else tail[:end]
        out = set()
        if end < 0:
            if self._starts(i, body, taken):
                out.add(("val", i, rest, taken))
            if not quote:  # the span may have ended where the next literal (maybe a multi-byte 「；」) began
                for k in range(max(0, len(tail) - len(sep)), len(tail) + 1):
                    if sep.startswith(tail[k:]) and (places := self._ends(i, tail[:k], taken)):
                        out |= self._at_literal(text, pos + k, i + 1, self._took(places, tail[:k], taken))
        elif places := self._ends(i, body, taken):
            out |= self._at_literal(text, pos + len(quote) + end + len(quote), i + 1, self._took(places, body, taken))
        return out

    def states(self, text: bytes) -> set:
        """Every parse of an answer prefix; empty when it has left the schema."""
        return self._at_literal(text, 0, 0)

    # -- what may come next -----------------------------------------------------------------------
    def spans(self, i: int) -> list[str]:
        """Every span of the question that field i may copy (whole characters at word edges, no stop
        text, a whole number for a digits field), ignoring what earlier fields took: for grammars that
        other runtimes enforce (zerotune.export.grammar)."""
        q = self.q
        starts = sorted(p for p in self.starting if self._can_start(p))
        ends = sorted(e for e in self.ending if self._can_end(e))
        return sorted({q[a:b].decode("utf-8") for a in starts for b in ends if b > a and self._body_ok(i, q[a:b])})

    def _span_starts(self, i: int, taken: tuple) -> list[int]:
        """Where a copied span of field i may start (computed once per question and taken spans)."""
        key = ("starts", i, taken)
        if key not in self._memo:
            q = self.q
            self._memo[key] = [p for p in self.starting if self._can_start(p) and self._body_ok(i, q[p:p + 1])
                               and not _overlaps(p, p + 1, taken)]
        return self._memo[key]

    def _body_ok(self, i: int, body: bytes) -> bool:
        if any(s in body for s in self.stops[i]):
            return False
        if not self.fields[i].digits or body in (b"", b"-"):
            return True
        text = body.lstrip(b"-").decode("utf-8", "ignore")  # a character cut short waits for its bytes
        return text.isdigit() or (not text and len(body.lstrip(b"-")) < 4)

    def _after_literal(self, i: int, off: int, room: int, expand: bool = True, taken: tuple = ()) -> list[bytes]:
        """Literal i from `off`, then (when `expand`) the start of field i's value, within `room` bytes.
        A token rarely reaches from one literal through a value into the next, so after a value's end only
        the literal is looked ahead; a copied span after a literal is looked ahead a few bytes, or in full
        when at most LITERAL_TAIL bytes of the literal are left (" Benjamin" after "name:" is one token)."""
        rest = self.lits[i][off:]
        if not expand or len(rest) >= room or i == len(self.fields):
            return [rest[:max(room, 0)]]
        peek = room if len(rest) <= LITERAL_TAIL else SPAN_PEEK
        return [rest + s for s in self._value_start(i, room - len(rest), peek, taken)]

    def _close(self, i: int, room: int) -> list[bytes]:
        """The closing quote of field i's copied span and the literal after it, within `room` bytes."""
        quote = self.quotes[i]
        if room <= len(quote):
            return [quote[:max(room, 0)]]
        return [quote + s for s in self._after_literal(i + 1, 0, room - len(quote), expand=False)]

    def _value_start(self, i: int, room: int, peek: int, taken: tuple) -> list[bytes]:
        key = ("value", i, room, peek, taken)
        if key in self._memo:
            return self._memo[key]
        out = []
        for lab in self.labels[i]:
            out += [lab[:room]] if len(lab) >= room else \
                [lab + s for s in self._after_literal(i + 1, 0, room - len(lab), expand=False)]
        if self.fields[i].copy:
            quote = self.quotes[i]
            room = min(room, len(quote) + peek)
            if room <= len(quote):
                out.append(quote[:room])
            else:
                out += [quote + s for s in self._fresh_span(i, room - len(quote), taken)]
        self._memo[key] = out
        return out

    def _copy_from(self, i: int, body: bytes, starts, room: int, taken: tuple) -> list[bytes]:
        """Continuations of a copied span `body` (its possible starts given) within `room` bytes."""
        out = []
        for p in starts:
            e = p + len(body)
            for c in range(0, min(room, len(self.q) - e) + 1):
                ext = self.q[e:e + c]
                if not self._body_ok(i, body + ext) or _overlaps(p, e + c, taken):
                    break
                if c == room:
                    out.append(ext)
                elif body + ext and self._can_end(e + c):
                    out += [ext + s for s in self._close(i, room - c)]
        return out

    def _from_value(self, i: int, sofar: bytes, room: int, taken: tuple) -> list[bytes]:
        out = []
        for lab in self.labels[i]:
            if lab.startswith(sofar) and lab != sofar:
                rest = lab[len(sofar):]
                out += [rest[:room]] if len(rest) >= room else \
                    [rest + s for s in self._after_literal(i + 1, 0, room - len(rest), expand=False)]
        if not self.fields[i].copy:
            return out
        quote = self.quotes[i]
        if len(sofar) < len(quote):
            rest = quote[len(sofar):]
            if room <= len(rest):
                return out + [rest[:room]]
            return out + [rest + s for s in self._fresh_span(i, room - len(rest), taken)]
        body = sofar[len(quote):]
        return out + (self._copy_from(i, body, self._starts(i, body, taken), room, taken) if body
                      else self._fresh_span(i, room, taken))

    def _fresh_span(self, i: int, room: int, taken: tuple) -> list[bytes]:
        """Every copied span field i may begin with, within `room` bytes (computed once per question)."""
        key = ("span", i, room, taken)
        if key not in self._memo:
            self._memo[key] = self._copy_from(i, b"", self._span_starts(i, taken), room, taken)
        return self._memo[key]

    def continuations(self, text: bytes) -> tuple[list[bytes], bool]:
        """(byte strings that may follow `text`, each up to the lookahead; whether the answer may end here)."""
        out, end = [], False
        for state in self.states(text):
            if state[0] == "end":
                end = True
            elif state[0] == "lit":
                out += self._after_literal(state[1], state[2], self.depth, taken=state[3])
            else:
                out += self._from_value(state[1], state[2], self.depth, state[3])
        return [s for s in dict.fromkeys(out) if s], end
