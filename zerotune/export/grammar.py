"""The answer schema as grammars other runtimes enforce, so an exported model decodes as `zerotune eval` does.

`zerotune eval`, `generate` and `serve` keep answers to the schema the training answers share
(zerotune.data.schema): exact keys and separators, a label field one of training's labels, a copy field a
span of the question. An exported model run by llama.cpp, Ollama or ONNX Runtime GenAI decodes freely
unless it is given the same rules, and on the English example free decoding scores 10-15 points lower. This
module writes the schema for those runtimes:

    gbnf(schema, question)         llama.cpp (`--grammar-file`, the server's "grammar" field)
    lark(schema, question)         llguidance's Lark, as ONNX Runtime GenAI's set_guidance("lark_grammar") takes it
    json_schema(schema, question)  JSON answers only: Ollama's "format", any JSON-schema decoder

With a question, copy fields may only be the spans of that question the schema matcher allows (one grammar
per request, what eval enforces but for the rule that copies may not overlap); without one (the files an
export writes), a copy field is any text free of the field's stop characters (digits for a number field),
so labels and structure are still kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from zerotune.data.schema import Field, Matcher, Schema


def _digits(schema: Schema, field: Field) -> str:
    """The digit ranges a number field copies: ASCII or full-width in text, ASCII in a bare JSON number."""
    return "0-9" if schema.kind == "json" and not field.quote else "0-9０-９"


def _choices(schema: Schema, question: str | None) -> list[tuple[list[str], Field]]:
    """Per field: the exact texts it may be (labels, and with a question the quoted spans it may copy)."""
    matcher = Matcher(schema, question) if question is not None else None
    out = []
    for i, field in enumerate(schema.fields):
        texts = list(field.labels)
        if field.copy and matcher is not None:
            texts += [f"{field.quote}{span}{field.quote}" for span in matcher.spans(i)]
        out.append((sorted(set(texts)), field))
    return out


def _stop_chars(field: Field) -> str:
    return "".join(sorted({s[0] for s in field.stops if s}))


# ---------------------------------------------------------------------------------------------- GBNF

def _gbnf_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\r", "\\r").replace("\t", "\\t") + '"'


def _gbnf_class(chars: str) -> str:
    """[^chars]: characters other than these (the special ones as \\xHH, which llama.cpp reads anywhere)."""
    return "[^" + "".join(f"\\x{ord(c):02X}" if c in '\\]^-["' or ord(c) < 32 else c for c in chars) + "]"


def gbnf(schema: Schema, question: str | None = None) -> str:
    """A GBNF grammar (llama.cpp) of the answers the schema allows, for one question or (None) any.

    Args:
        schema: from infer_schema / a run's data/schema.json.
        question: the user's text the answer is for; None for a grammar that fits every question.
    Returns:
        The grammar text; its start rule is `root`.
    """
    parts, rules = [], []
    for i, (literal, (texts, field)) in enumerate(zip(schema.literals, _choices(schema, question))):
        parts += [_gbnf_str(literal), f"field{i}"]
        alts = [_gbnf_str(t) for t in texts]
        if field.copy and question is None:
            quote = _gbnf_str(field.quote) + " " if field.quote else ""
            body = f'"-"? [{_digits(schema, field)}]+' if field.digits else _gbnf_class(_stop_chars(field)) + "+"
            alts.append(f"{quote}{body}{' ' + _gbnf_str(field.quote) if field.quote else ''}")
        rules.append(f"field{i} ::= " + (" | ".join(alts) if alts else '""'))
    parts.append(_gbnf_str(schema.literals[-1]))
    return "\n".join([f"# answers of the schema {schema.describe()}", "root ::= " + " ".join(parts), *rules]) + "\n"


# ---------------------------------------------------------------------------------------------- Lark

def _lark_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _lark_class(chars: str) -> str:
    """[^chars] inside a Lark regex."""
    escaped = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "[^" + "".join(escaped.get(c, "\\" + c if c in "\\]^-/[" else c) for c in chars) + "]"


def _lark_regex(pattern: str) -> str:
    return "/" + pattern.replace("/", "\\/") + "/"


def lark(schema: Schema, question: str | None = None) -> str:
    """A Lark grammar in llguidance's dialect (ONNX Runtime GenAI's guidance) of the answers the schema
    allows. The whole answer is one terminal, so overlapping copy spans never make the lexer choose.

    Args and returns as gbnf (start rule `start`).
    """
    parts, terms = [], []
    for i, (literal, (texts, field)) in enumerate(zip(schema.literals, _choices(schema, question))):
        parts += [_lark_str(literal), f"FIELD{i}"]
        alts = [_lark_str(t) for t in texts]
        if field.copy and question is None:
            body = f"-?[{_digits(schema, field)}]+" if field.digits else _lark_class(_stop_chars(field)) + "+"
            alts.append(_lark_regex(re.escape(field.quote) + body + re.escape(field.quote)))
        terms.append(f"FIELD{i}: " + (" | ".join(alts) if alts else '""'))
    parts.append(_lark_str(schema.literals[-1]))
    return "\n".join([f"// answers of the schema {schema.describe()}", "start: ANSWER", "ANSWER: " + " ".join(parts),
                      *terms]) + "\n"


# --------------------------------------------------------------------------------------- JSON schema

_INVALID = object()


def _json_value(text: str):
    """The JSON value a value text writes, or _INVALID (a copied "012" is no JSON number)."""
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return _INVALID


def json_schema(schema: Schema, question: str | None = None) -> dict | None:
    """A JSON Schema of the answers (JSON answers only; None for key:value answers).

    Key order and spacing are left to the runtime; values are kept: labels as enums, copies as strings
    (with a question: an enum of the spans it may copy) or integers.
    """
    if schema.kind != "json":
        return None
    properties = {}
    for texts, field in _choices(schema, question):
        options: list[dict] = []
        if field.copy and question is not None:
            options.append({"enum": [v for v in map(_json_value, texts) if v is not _INVALID]})
        else:
            if field.labels:
                options.append({"enum": [json.loads(t) for t in field.labels]})
            if field.copy and field.digits:
                options.append({"type": "string", "pattern": f"^-?[{_digits(schema, field)}]+$"} if field.quote
                               else {"type": "integer"})
            elif field.copy:
                options.append({"type": "string"})
        properties[field.name] = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def write_grammars(schema: Schema | None, out_dir: str | Path) -> list[Path]:
    """The question-independent grammars beside an export: answer.gbnf, answer.lark and, for JSON
    answers, answer.schema.json. Nothing when the run's answers have no schema (free text)."""
    if schema is None:
        return []
    out = Path(out_dir)
    written = [out / "answer.gbnf", out / "answer.lark"]
    written[0].write_text(gbnf(schema), encoding="utf-8")
    written[1].write_text(lark(schema), encoding="utf-8")
    spec = json_schema(schema)
    if spec is not None:
        written.append(out / "answer.schema.json")
        written[-1].write_text(json.dumps(spec, ensure_ascii=False, indent=1), encoding="utf-8")
    return written
