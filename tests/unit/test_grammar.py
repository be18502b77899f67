"""The answer schema as grammars for other runtimes (GBNF, llguidance Lark, JSON Schema), checked by a real
grammar engine: llguidance, the one ONNX Runtime GenAI enforces guidance with (its GBNF reader follows
llama.cpp's syntax)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny import deepseek_tokenizer
from zerotune.data.formats import read_examples
from zerotune.data.schema import infer_schema
from zerotune.export.grammar import gbnf, json_schema, lark, write_grammars

llguidance = pytest.importorskip("llguidance")  # a test dependency (pyproject's [test] extra)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def engine():
    import llguidance.hf

    tokenizer = deepseek_tokenizer()
    return tokenizer, llguidance.hf.from_tokenizer(tokenizer)


def accepts(engine, fmt: str, grammar: str, answer: str) -> bool:
    """Whether the grammar takes the whole answer (tokenized as the model would write it)."""
    tokenizer, ll_tokenizer = engine
    matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.grammar_from(fmt, grammar))
    assert not matcher.is_error(), matcher.get_error()
    matcher.consume_tokens(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return not matcher.is_error() and matcher.is_accepting()


def _task(name: str):
    schema = infer_schema(read_examples(str(EXAMPLES / name / "train.jsonl")))[0]
    rows = read_examples(str(EXAMPLES / name / "eval.jsonl"))[:6]
    return schema, [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows]


def _drifts(task: str, answer: str, other: str) -> tuple[str, str, str, str]:
    """For one answer: (an unseen label, a broken structure, the answer with another question's value
    copied in, that value)."""
    if task == "support_en":
        value, name = json.loads(answer), json.loads(other)["name"]
        label = json.dumps({**value, "issue": "overdue"})
        return label, answer.replace(', "issue"', ' "issue"'), json.dumps({**value, "name": name}), name
    fields = dict(pair.split(":", 1) for pair in answer.split(";"))
    symptom = dict(pair.split(":", 1) for pair in other.split(";"))["症状"]
    label = ";".join(f"{k}:{'中等' if k == '程度' else v}" for k, v in fields.items())
    copied = ";".join(f"{k}:{symptom if k == '症状' else v}" for k, v in fields.items())
    return label, answer.replace(";", "；", 1), copied, symptom


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_grammars_take_the_answers_and_refuse_drift(engine, task):
    """Both grammar forms take every expected eval answer, with and without its question; they refuse an
    unseen label and a broken structure; only the per-question grammar refuses a value copied from
    another question."""
    schema, pairs = _task(task)
    static = {"gbnf": gbnf(schema), "lark": lark(schema)}
    for n, (question, answer) in enumerate(pairs):
        label, broken, copied, value = _drifts(task, answer, pairs[(n + 1) % len(pairs)][1])
        assert value not in question
        per_question = {"gbnf": gbnf(schema, question), "lark": lark(schema, question)}
        for fmt in ("gbnf", "lark"):
            for grammar in (static[fmt], per_question[fmt]):
                assert accepts(engine, fmt, grammar, answer), (fmt, answer)
                assert not accepts(engine, fmt, grammar, label), (fmt, label)
                assert not accepts(engine, fmt, grammar, broken), (fmt, broken)
            assert accepts(engine, fmt, static[fmt], copied)
            assert not accepts(engine, fmt, per_question[fmt], copied), (fmt, copied)


def test_json_schema_keeps_labels_and_numbers(engine):
    schema, pairs = _task("support_en")
    assert json_schema(_task("clinic_zh")[0]) is None  # key:value answers are not JSON
    static = json.dumps(json_schema(schema))
    for n, (question, answer) in enumerate(pairs):
        label, _, copied, _ = _drifts("support_en", answer, pairs[(n + 1) % len(pairs)][1])
        per_question = json.dumps(json_schema(schema, question))
        assert accepts(engine, "json_schema", static, answer) and accepts(engine, "json_schema", per_question, answer)
        assert not accepts(engine, "json_schema", static, label)
        assert accepts(engine, "json_schema", static, copied) and not accepts(engine, "json_schema", per_question,
                                                                             copied)
    with_letters = json.dumps({**json.loads(pairs[0][1]), "order_id": "48x13"})
    assert not accepts(engine, "json_schema", static, with_letters)  # order ids were always digits


def test_write_grammars_beside_an_export(tmp_path):
    schema, _ = _task("clinic_zh")
    assert write_grammars(None, tmp_path) == []
    written = write_grammars(schema, tmp_path)
    assert [p.name for p in written] == ["answer.gbnf", "answer.lark"]  # no JSON Schema for key:value answers
    assert written[0].read_text(encoding="utf-8") == gbnf(schema)


def test_bare_json_numbers_stay_ascii(engine):
    """A copied JSON number (no quotes) may only be ASCII digits in the any-question grammar: full-width
    digits, fine inside text, would not parse as JSON."""
    ages = [23, 31, 47, 52, 68, 74]
    visit = {"new": "here for the first time", "repeat": "back again"}
    rows = [{"messages": [{"role": "user", "content": f"Patient aged {age}, {visit[kind]}"},
                          {"role": "assistant", "content": json.dumps({"age": age, "kind": kind})}]}
            for age, kind in zip(ages, ["new", "repeat"] * 3)]
    schema = infer_schema(rows)[0]
    assert schema is not None and schema.fields[0].digits and not schema.fields[0].quote and not schema.fields[1].copy
    for fmt, grammar in (("gbnf", gbnf(schema)), ("lark", lark(schema))):
        assert accepts(engine, fmt, grammar, '{"age": 39, "kind": "new"}')
        assert not accepts(engine, fmt, grammar, '{"age": ３９, "kind": "new"}')
        assert not accepts(engine, fmt, grammar, '{"age": 39, "kind": "old"}')
