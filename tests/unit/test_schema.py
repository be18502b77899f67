"""The answer schema read off training rows, and the matcher that keeps decoding to it."""

import json
from pathlib import Path

import pytest

from zerotune.data.formats import read_examples
from zerotune.data.schema import Matcher, Schema, infer_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _row(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _accepts(matcher: Matcher, answer: str) -> bool:
    """Every byte of `answer` is allowed after the bytes before it, and the answer may end there."""
    data = answer.encode()
    for k in range(len(data)):
        strings, _ = matcher.continuations(data[:k])
        if not any(s.startswith(data[k:k + 1]) for s in strings):
            return False
    return matcher.continuations(data)[1]


@pytest.fixture(scope="module")
def en():
    return infer_schema(read_examples(str(EXAMPLES / "support_en/train.jsonl")))[0]


@pytest.fixture(scope="module")
def zh():
    return infer_schema(read_examples(str(EXAMPLES / "clinic_zh/train.jsonl")))[0]


def test_json_schema_of_the_english_example(en):
    assert en.kind == "json" and [f.name for f in en.fields] == ["name", "order_id", "product", "issue", "action"]
    by = {f.name: f for f in en.fields}
    assert by["name"].copy and by["product"].copy and by["name"].labels == ()
    assert by["order_id"].copy and by["order_id"].labels == ("null",)  # no order number given: null
    assert not by["issue"].copy and set(by["issue"].labels) == {
        '"damaged"', '"late"', '"wrong_item"', '"missing"', '"billing"', '"defective"'}
    assert en.literals[0] == '{"name": ' and en.literals[-1] == "}"


def test_key_value_schema_of_the_chinese_example(zh):
    by = {f.name: f for f in zh.fields}
    assert zh.kind == "kv" and list(by) == ["性别", "年龄", "症状", "程度", "病程", "既往史"]
    assert not by["性别"].copy and set(by["性别"].labels) == {"男", "女"}  # 先生 -> 男 is mapped, not copied
    assert not by["程度"].copy and set(by["程度"].labels) == {"轻", "中", "重"}
    assert by["既往史"].copy and by["既往史"].labels == ("无",)
    assert by["症状"].copy and zh.literals[:2] == ("性别:", ";年龄:")


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_every_unseen_eval_answer_is_allowed(task, en, zh):
    """No false rejection: each eval answer (new values, new phrasings) passes byte by byte."""
    schema = en if task == "support_en" else zh
    rows = read_examples(str(EXAMPLES / task / "eval.jsonl"))
    for row in rows:
        question, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        assert _accepts(Matcher(schema, question), answer), answer


def test_what_the_matcher_refuses(en):
    q = ("Greetings, Greta speaking. Regarding purchase 533521, a totally different thing came instead of my "
         "juicer. Void this purchase.")
    m = Matcher(en, q)
    good = {"name": "Greta", "order_id": "533521", "product": "juicer", "issue": "wrong_item", "action": "cancel"}
    assert _accepts(m, json.dumps(good))
    for field, bad in [("action", "void"),  # a label training never used
                       ("product", "juice"),  # half a word of the question
                       ("product", "sewing machine"),  # not in the question
                       ("name", "reta"),  # starts inside a word
                       ("order_id", "533521 ")]:
        assert not _accepts(m, json.dumps({**good, field: bad})), (field, bad)
    assert not m.states(b'{"name": "Greta", "order": ')  # a key out of place
    assert not _accepts(m, json.dumps(good)[:-1])  # cannot end before the closing brace
    assert _accepts(m, json.dumps({**good, "order_id": None}))  # null, as training wrote when none was given


def test_chinese_spans_end_on_characters_not_bytes(zh):
    q = "女士（41岁）四个月内反复出现难以忍受的下肢麻木，平素身体健康。"
    m = Matcher(zh, q)
    half = "性别:女;年龄:41;症状:下肢麻木".encode()[:-1]  # inside the last character's bytes
    assert m.states(half)  # a prefix
    assert not any(s.startswith(b";") for s in m.continuations(half)[0]) and not m.states(half + b";")
    assert _accepts(m, "性别:女;年龄:41;症状:下肢麻木;程度:重;病程:四个月;既往史:无")
    assert not _accepts(m, "性别:女;年龄:41;症状:下肢麻木;程度:重度;病程:四个月;既往史:无")  # 重度 is no label
    assert not _accepts(m, "性别:女;年龄:41;症状:下肢麻木;程度:重;病程:四个月")  # a field left out


def test_no_schema_for_free_text_or_mixed_shapes():
    prose = [_row(f"Tell me about item {i}", f"Item {i} is a fine thing, made in {1990 + i}.") for i in range(10)]
    assert infer_schema(prose) == (None, "answers are free text")
    mixed = [_row(f"Order {i} from Ann Lee", json.dumps({"name": "Ann Lee", "order": str(i)})) for i in range(5)]
    mixed += [_row(f"Order {i} from Bo Chan", f"name:Bo Chan;order:{i}") for i in range(5)]
    schema, why = infer_schema(mixed)
    assert schema is None and "share one structure" in why
    free_field = [_row(f"Ticket {i}", json.dumps({"id": str(i), "summary": f"free text number {i} " * 2}))
                  for i in range(20)]
    schema, why = infer_schema(free_field)
    assert schema is None and "summary" in why


def test_schema_round_trips_through_json(en, zh):
    for schema in (en, zh):
        assert Schema.from_json(schema.to_json()) == schema


def test_augmented_rows_do_not_shape_the_schema():
    rows = [_row(f"Order {i}: Ann Lee wants a refund", json.dumps({"name": "Ann Lee", "action": "refund"}))
            for i in range(10)]
    odd = {**_row("x", json.dumps({"name": "x", "action": "shout"})), "augmented": "slot_swap"}
    schema, _ = infer_schema(rows + [odd] * 5)
    assert schema is not None and schema.rows == 10


def _schema(answers_and_questions) -> Schema:
    schema, why = infer_schema([_row(q, a) for q, a in answers_and_questions])
    assert schema is not None, why
    return schema


def test_spans_start_and_end_on_words_not_on_spaces_or_punctuation():
    rows = [(f"Hello, {n} here about ticket {i}.", json.dumps({"name": n, "kind": k}))
            for i, (n, k) in enumerate([("Ann Lee", "a"), ("Bo Chan", "b"), ("Cy Dunn", "a"), ("Di Ewe", "b"),
                                        ("Ed Fox", "a"), ("Flo Gil", "b")] * 2)]
    m = Matcher(_schema(rows), "Hello, Zoë Ngata here. Order 4455.")
    for bad in ["Zo", ", Zoë", " Zoë", "Zoë Ngata.", "Ngata. Order", ".", "4455."]:
        assert not _accepts(m, json.dumps({"name": bad, "kind": "a"}, ensure_ascii=False)), bad
    assert _accepts(m, json.dumps({"name": "Zoë Ngata", "kind": "a"}, ensure_ascii=False))


def test_escaped_json_copies_give_no_schema_rather_than_a_wrong_one():
    rows = [(f"Patient {n}, ticket {i}", json.dumps({"name": n, "t": str(i)})) for i, n in
            enumerate(["Zoë", "José", "Jürgen", "Åsa", "Chloé", "Noël"] * 2)]  # json.dumps escapes them: \u00eb
    schema, why = infer_schema([_row(q, a) for q, a in rows])
    assert schema is None and "escaped" in why


def test_key_value_with_a_space_offers_the_whole_first_word():
    rows = [(f"Caller {n} phoned about {t}", f"name: {n}; topic: {t}") for n, t in
            [("Ann", "billing"), ("Ben", "refund"), ("Cara", "billing"), ("Dev", "refund"), ("Eve", "billing"),
             ("Finn", "refund")] * 2]
    schema = _schema(rows)
    m = Matcher(schema, "Caller Benjamin phoned about refund")
    assert any(s.startswith(b" Benjamin") for s in m.continuations(b"name:")[0])
    assert _accepts(m, "name: Benjamin; topic: refund")


def test_full_width_separators_and_digits():
    rows = [(f"患者{a}岁，{s}", f"年龄：{a}；症状：{s}") for a, s in
            [("３９", "头痛"), ("４１", "咳嗽"), ("５５", "发热"), ("６０", "胸闷"), ("７２", "腹泻"), ("２８", "乏力")] * 2]
    m = Matcher(_schema(rows), "患者４４岁，头晕")
    assert _accepts(m, "年龄：４４；症状：头晕")


def test_a_mostly_empty_optional_field_keeps_the_schema():
    rows = [(f"Order {i} from Ann Lee" + (f", code X{i}Y" if i % 3 == 0 else ""),
             json.dumps({"name": "Ann Lee", "code": f"X{i}Y" if i % 3 == 0 else None})) for i in range(30)]
    schema = _schema(rows)
    code = schema.fields[1]
    assert code.copy and code.labels == ("null",)


def test_long_questions_stay_cheap():
    """Value starts are enumerated once per question, not once per token: a 2,000-character question
    still answers every prefix (a functional check; no timing is asserted)."""
    schema = infer_schema(read_examples(str(EXAMPLES / "support_en/train.jsonl")))[0]
    filler = "I have been a customer for many years and I write to you again today. " * 28
    q = "Greetings, Greta speaking. " + filler + "Regarding purchase 533521, the juicer is overdue. Void this purchase."
    m = Matcher(schema, q)
    answer = json.dumps({"name": "Greta", "order_id": "533521", "product": "juicer", "issue": "late",
                         "action": "cancel"})
    assert len(q) > 2000 and _accepts(m, answer)
    assert ("span", 0, 24 - 1) in m._memo or any(k[0] == "span" for k in m._memo)  # reused, not recomputed


def test_a_field_copied_as_numbers_only_copies_numbers():
    rows = [(f"患者{a}岁，{s}{d}", f"年龄:{a};症状:{s};病程:{d}") for a, s, d in
            [("39", "头痛", "三天"), ("41", "咳嗽", "两周"), ("55", "发热", "一天"), ("60", "胸闷", "五天"),
             ("72", "腹泻", "三周"), ("28", "乏力", "半年")] * 2]
    schema = _schema(rows)
    age, symptom = schema.fields[0], schema.fields[1]
    assert age.digits and not symptom.digits
    m = Matcher(schema, "先生（70岁）三周内反复出现少许咽喉肿痛")
    assert _accepts(m, "年龄:70;症状:咽喉肿痛;病程:三周")
    assert not _accepts(m, "年龄:三周;症状:咽喉肿痛;病程:三周")  # what an unconstrained span allowed
    assert not _accepts(m, "年龄:7;症状:咽喉肿痛;病程:三周")  # part of a number is no number
    full = Matcher(_schema([(q.replace("3", "３"), a.replace("3", "３")) for q, a in rows]), "患者３４岁，头晕两天")
    assert _accepts(full, "年龄:３４;症状:头晕;病程:两天")


def test_copy_fields_that_never_shared_a_span_in_training_take_separate_ones():
    zh = infer_schema(read_examples(str(EXAMPLES / "clinic_zh/train.jsonl")))[0]
    assert zh.disjoint and Schema.from_json(zh.to_json()).disjoint
    m = Matcher(zh, "病人女，25岁；重度胸痛两个月；合并肝硬化。")
    assert _accepts(m, "性别:女;年龄:25;症状:胸痛;程度:重;病程:两个月;既往史:肝硬化")
    assert not _accepts(m, "性别:女;年龄:25;症状:胸痛;程度:重;病程:两个月;既往史:胸痛")  # seen in eval
    assert not _accepts(m, "性别:女;年龄:25;症状:胸痛两个月;程度:重;病程:两个月;既往史:肝硬化")
    # a value found twice in the question stays open to the later field: which one was taken is unknown
    twice = Matcher(zh, "女，30岁，头痛两天，既往头痛。")
    assert _accepts(twice, "性别:女;年龄:30;症状:头痛;程度:中;病程:两天;既往史:头痛")
    # where training rows shared a span between fields, the schema does not forbid it
    rows = [(f"{n} Ltd wrote about order {i}", json.dumps({"name": n, "company": f"{n} Ltd"}))
            for i, n in enumerate(["Ann Lee", "Bo Chan", "Cy Dunn", "Di Ewe", "Ed Fry", "Flo Gee"])]
    assert not _schema(rows).disjoint
