"""Copy-slot detection, slot swap, phrasing mix and the policy prepare applies by default."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from zerotune.config import PrepareConfig
from zerotune.data.augment import augment_for_training
from zerotune.data.prepare import prepare
from zerotune.data.slots import Slot, detect_slots, keeps_copies, rewrite, slot_coverage
from zerotune.data.swap import WORDS, clause_order, jieba_available, phrasing_swap, slot_swap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FIRST = ["Maria", "Lucas", "Kenji", "Amara", "Isabel", "Omar", "Chloe", "Tom", "Leila", "Samuel"]
LAST = ["Lopez", "Schmidt", "Tanaka", "Okafor", "Rossi", "Smith-Jones", "Novak", "Berg"]
PRODUCTS = ["keyboard", "air fryer", "webcam", "rice cooker", "headset", "desk lamp"]
FRAMES = ["Hi, I'm {name}. Order {order}: the {product} arrived broken. Refund please.",
          "Order #{order} - my {product} never came. Regards, {name}",
          "This is {name}; the {product} from order {order} is faulty, please replace it."]


def row(question: str, answer: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **extra}


def english(n: int, seed: int = 0, first=FIRST, last=LAST) -> list[dict]:
    """Support messages -> compact JSON, the shape of examples/support_en."""
    rng, rows = random.Random(seed), []
    for _ in range(n):
        name = f"{rng.choice(first)} {rng.choice(last)}"
        order, product, k = str(rng.randrange(10000, 999999)), rng.choice(PRODUCTS), rng.randrange(3)
        record = {"name": name, "order_id": order, "product": product, "issue": ["damaged", "missing", "defective"][k]}
        rows.append(row(FRAMES[k].format(name=name, order=order, product=product), json.dumps(record)))
    return rows


def load(task: str, split: str) -> list[dict]:
    lines = (EXAMPLES / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [row(r["input"], r["output"], category=r["category"]) for r in map(json.loads, lines)]


def answer_record(r: dict) -> dict:
    return json.loads(r["messages"][-1]["content"])


def texts(rows: list[dict]) -> str:
    return "\n".join(m["content"] for r in rows for m in r["messages"])


def test_detects_json_fields_copied_from_the_input_only():
    r = row("Hi, it's Lucas Schmidt. Order 232946: the rice cooker is late. Ship it.",
            json.dumps({"name": "Lucas Schmidt", "order_id": "232946", "product": "rice cooker",
                        "issue": "late", "action": "track", "meta": {"age": 43, "tags": ["Ship"]}}))
    slots = detect_slots(r)
    assert Slot("name", "Lucas Schmidt", "latin") in slots
    assert Slot("order_id", "232946", "digits") in slots
    assert Slot("product", "rice cooker", "latin") in slots
    assert Slot("issue", "late", "latin") in slots  # copied in this row; coverage tells labels apart
    assert Slot("meta.tags[]", "Ship", "latin") in slots
    assert not any(s.name in ("action", "meta.age") for s in slots)  # not in the input
    # "cook" inside "cooker" is not a copy of the value "cook"
    assert detect_slots(row("my cooker broke", '{"product": "cook"}')) == []


def test_detects_key_value_fields_and_cjk_values():
    r = row("女患者60岁，既往有贫血，近一天出现严重背痛。", "性别:女;年龄:60;症状:背痛;程度:重;病程:一天;既往史:贫血")
    assert detect_slots(r) == [Slot("年龄", "60", "digits"), Slot("症状", "背痛", "cjk"),
                               Slot("病程", "一天", "cjk"), Slot("既往史", "贫血", "cjk")]  # one-character labels skipped
    assert [s.name for s in detect_slots(row("name: Ana Costa, city is Porto", "name: Ana Costa, city: Porto"))] == \
        ["name", "city"]


def test_detects_spans_of_free_text_answers():
    r = row("我想申请退货，订单号是 88231，东西坏了", "已为您申请退货，订单 88231 的退款三天内到账。")
    assert {(s.value, s.kind) for s in detect_slots(r)} >= {("申请退货", "cjk")}
    assert all(s.name == "span" for s in detect_slots(r))
    r = row("Please move the Acme Corporation meeting to Berlin.", "Moved: Acme Corporation, Berlin.")
    assert [s.value for s in detect_slots(r)] == ["Acme Corporation", "Berlin"]


def test_coverage_tells_copy_fields_from_labels_and_flags_memorisation():
    rows = english(200) + [row("the parcel is missing", '{"issue": "missing"}')]
    cov = slot_coverage(rows, english(20, seed=9, first=["Zoe"], last=["Quist"]))
    slots = cov["slots"]
    assert slots["name"]["copy_field"] and slots["order_id"]["copy_field"] and slots["product"]["copy_field"]
    assert not slots["issue"]["copy_field"] and slots["issue"]["copy_rate"] < 0.2  # a label some inputs contain
    assert slots["product"]["distinct"] == 6 and slots["product"]["memorise_risk"]
    assert not slots["order_id"]["memorise_risk"]
    assert slots["name"]["eval_unseen"] == 1.0 and slots["product"]["eval_unseen"] == 0.0
    assert cov["rows"] == 201 and cov["rows_with_slots"] == 200


def test_swapped_rows_keep_input_and_output_consistent():
    rows = english(60)
    made = slot_swap(rows, [], seed=1)
    assert len(made) == 60 and all(r["augmented"] == "slot_swap" for r in made)
    for new in made:
        record, question = answer_record(new), new["messages"][0]["content"]
        for key in ("name", "order_id", "product"):
            assert record[key] in question
        assert record["issue"] in ("damaged", "missing", "defective")
    for old, new in zip(rows, made):
        before, after = answer_record(old), answer_record(new)
        assert after["name"] != before["name"] and after["order_id"] != before["order_id"]
        assert len(after["order_id"]) == len(before["order_id"]) and after["order_id"][0] != "0"
        assert after["issue"] == before["issue"]
        assert after["name"].count(" ") == before["name"].count(" ") and after["name"].istitle()
        assert ("-" in after["name"]) == ("-" in before["name"])
        # the question's frame (everything but the values) is unchanged
        frame = old["messages"][0]["content"]
        for key in ("name", "order_id", "product"):
            frame = frame.replace(before[key], "{}")
        shape = new["messages"][0]["content"]
        for key in ("name", "order_id", "product"):
            shape = shape.replace(after[key], "{}")
        assert frame == shape


def test_swap_keeps_json_style_and_key_value_keys():
    r = row("Ich bin Jürgen Weiß aus Zürich, Bestellung 5521, Produkt Laptop Stand.",
            json.dumps({"name": "Jürgen Weiß", "city": "Zürich", "id": 5521, "product": "Laptop Stand"},
                       separators=(",", ":")))
    new = slot_swap([r], [], seed=0, vocab=["marble", "copper", "lantern"], names=["name", "id", "product"])[0]
    answer, question = new["messages"][1]["content"], new["messages"][0]["content"]
    assert answer.startswith('{"name":"') and '"city":"Z\\u00fcrich","id":' in answer  # escapes, separators kept
    record = json.loads(answer)
    assert isinstance(record["id"], int) and str(record["id"]) in question and record["name"] in question
    assert record["product"] in question and record["name"].split()[0] in ("Marble", "Copper", "Lantern")
    kv = row("order 4411 for name Ana", "order:4411;name:Ana")
    new = slot_swap([kv], [], seed=0, names=["order", "name"])[0]["messages"][1]["content"]
    assert new.startswith("order:") and ";name:" in new and "4411" not in new


def test_ambiguous_rows_are_left_alone():
    # one value inside another: which text stands for which field is unclear
    nested = row("Tom Tomlinson here", '{"a": "Tom", "b": "Tom Tomlinson"}')
    assert rewrite(nested, {"Tom": "X", "Tom Tomlinson": "Y"}) is None
    # a value the system prompt also holds would go out of step with it
    system = {"messages": [{"role": "system", "content": "You help Maria."},
                           *row("I am Maria", '{"n": "Maria"}')["messages"]]}
    assert rewrite(system, {"Maria": "Tessa"}) is None
    multi = {"messages": row("a", "b")["messages"] * 2}
    assert rewrite(multi, {"a": "c"}) is None


def test_no_eval_value_ever_reaches_augmented_rows():
    # eval names are made of the fallback word list's own words, so the pool must steer around them
    words = [w.capitalize() for w in WORDS]
    eval_rows = english(40, seed=5, first=words[:60], last=words[60:120])
    train = english(80, seed=6)
    eval_values = {s.value for r in eval_rows for s in detect_slots(r) if s.name in ("name", "order_id", "product")}
    eval_values -= set(PRODUCTS)  # products are shared with train on purpose (see the phrasing mix below)
    made = slot_swap(train, eval_rows, seed=2, ratio=3) + phrasing_swap(train, eval_rows, seed=2)
    assert len(made) > 200
    blob = texts(made)
    assert not [v for v in eval_values if v in blob]
    assert not [w for v in eval_values for w in v.split() if w in blob]  # not even a part of a value


def test_same_seed_same_rows():
    rows, eval_rows = english(50), english(10, seed=3)
    assert slot_swap(rows, eval_rows, seed=4, ratio=1.5) == slot_swap(rows, eval_rows, seed=4, ratio=1.5)
    assert slot_swap(rows, eval_rows, seed=4) != slot_swap(rows, eval_rows, seed=5)
    assert phrasing_swap(rows, eval_rows, seed=4) == phrasing_swap(rows, eval_rows, seed=4)
    assert 70 <= len(slot_swap(rows, eval_rows, seed=4, ratio=1.5)) <= 80  # fractional ratio: some rows twice


def test_phrasing_mix_moves_values_between_templates():
    train = load("clinic_zh", "train")[:120]
    made = phrasing_swap(train, load("clinic_zh", "eval"), seed=0)
    assert len(made) >= 100 and all(r["augmented"] == "template_mix" for r in made)
    originals = {r["messages"][0]["content"] for r in train}
    for new in made:
        assert new["messages"][0]["content"] not in originals
        question, answer = new["messages"][0]["content"], new["messages"][1]["content"]
        fields = dict(pair.split(":", 1) for pair in answer.split(";"))
        for key in ("年龄", "症状", "病程"):
            assert fields[key] in question
        assert new["category"] == fields["程度"]


def test_policy_swaps_english_and_mixes_chinese():
    en, report = augment_for_training(load("support_en", "train"), load("support_en", "eval"), PrepareConfig(), seed=0)
    assert report["copy_fields"] == ["name", "product", "order_id"]  # most rows first, then answer order
    assert report["slot_swap"]["on"] and not report["phrasing_mix"]["on"]
    assert report["slot_swap"]["rows"] == 400 and report["synonym_swap"]["on"]  # synonym swap: test_lexicon.py
    assert len(en) == 400 + report["synonym_swap"]["rows"]
    zh, report = augment_for_training(load("clinic_zh", "train"), load("clinic_zh", "eval"), PrepareConfig(), seed=0)
    assert set(report["copy_fields"]) == {"年龄", "症状", "病程", "既往史"} and report["cjk_share"] == 1.0
    assert not report["slot_swap"]["on"] and "measured worse" in report["slot_swap"]["why"]
    assert not report["synonym_swap"]["on"]
    assert report["phrasing_mix"]["on"] and {r["augmented"] for r in zh} == {"template_mix"}
    assert not report["clause_order"]["on"] and report["clause_order"]["rows"] == 0  # opt-in
    made, report = augment_for_training(load("clinic_zh", "train"), [], PrepareConfig(clause_order="on"), seed=0)
    assert report["clause_order"]["on"] and {r["augmented"] for r in made} == {"template_mix", "clause_order"}
    assert report["clause_order"]["rows"] == sum(r["augmented"] == "clause_order" for r in made) >= 350
    off = PrepareConfig(slot_swap="off", phrasing_mix="off", synonym_swap="off")
    assert augment_for_training(load("support_en", "train")[:50], [], off, seed=0)[0] == []


def _clauses(text: str) -> tuple[list[str], list[str]]:
    parts = re.findall(r"([^，。；！？]+)([，。；！？]|$)", text)
    return sorted(a for a, _ in parts if a), [b for a, b in parts if a]


def test_clause_order_moves_han_clauses_and_keeps_the_answer():
    train = load("clinic_zh", "train")[:60]
    made = clause_order(train, load("clinic_zh", "eval"), seed=0)
    assert len(made) >= 50 and all(r["augmented"] == "clause_order" for r in made)
    by_answer = {}
    for r in train:
        by_answer.setdefault(r["messages"][1]["content"], []).append(r["messages"][0]["content"])
    questions = set()
    for new in made:
        question, answer = new["messages"][0]["content"], new["messages"][1]["content"]
        sources = by_answer[answer]  # the answer is untouched
        assert question not in sources and question not in questions
        questions.add(question)
        # the same clauses, the marks where they were, every copied value whole
        assert any(_clauses(question) == _clauses(q) for q in sources)
        fields = dict(pair.split(":", 1) for pair in answer.split(";"))
        for key in ("年龄", "症状", "病程"):
            assert fields[key] in question
    assert clause_order(train, [], seed=0) == clause_order(train, [], seed=0)
    assert clause_order(train, [], seed=0) != clause_order(train, [], seed=1)


def test_clause_order_moves_sentences_and_leaves_what_it_cannot():
    question = "Hi, I'm Ana Berg. Order 5512: the webcam broke. Refund please. Regards, Ana Berg"
    made = clause_order([row(question, '{"name": "Ana Berg", "order_id": "5512"}')] * 1, [], seed=0, ratio=3)
    assert made, "three sentences and a sign-off give new orders"
    for new in made:
        text = new["messages"][0]["content"]
        assert text.endswith("Regards, Ana Berg")  # a sign-off without a mark of its own stays last
        def sentences(t: str) -> list[str]:
            return sorted(s.strip() for s in re.findall(r"[^.]+\.", t[: -len("Regards, Ana Berg")]))
        assert sentences(text) == sentences(question) and text != question
    two = row("患者女，头痛。", "症状:头痛")  # two clauses: nothing to learn from swapping them
    split = row("患者女，头痛，发热三天，既往体健。", "症状:头痛，发热;性别:女")  # a value across a clause mark
    skipped = Counter()
    assert clause_order([two, split], [], seed=0, ratio=2, names=["症状"], skipped=skipped) == []
    assert skipped["a copied value would break"] == 2


@pytest.mark.skipif(not jieba_available(), reason="jieba not installed")
def test_cjk_swap_draws_dictionary_words_of_the_same_length():
    train = load("clinic_zh", "train")[:30]
    made = slot_swap(train, load("clinic_zh", "eval"), seed=0, kinds=("cjk", "digits"))
    assert len(made) >= 25
    for old, new in zip(train, made):
        before = dict(p.split(":", 1) for p in old["messages"][1]["content"].split(";"))
        after = dict(p.split(":", 1) for p in new["messages"][1]["content"].split(";"))
        assert len(after["症状"]) == len(before["症状"]) and after["症状"] in new["messages"][0]["content"]


def test_prepare_reports_slots_and_keeps_augmentation_out_of_eval(tmp_path, monkeypatch):
    monkeypatch.setattr("zerotune.data.report.plot", lambda report, path: Path(path).write_bytes(b""))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"input": r["messages"][0]["content"], "output": r["messages"][1]["content"]})
                            + "\n" for r in english(60)), encoding="utf-8")

    class DropsNames:  # a "paraphrase" that loses the copied name must not reach training
        def translate(self, texts, src, dst):
            return [t.replace("I'm", "I am") if dst == "en" else t.split(".")[-1] or t for t in texts]

    report = prepare([str(data)], str(tmp_path / "o"), eval_fraction=0.2, seed=0, progress=False,
                     translator=DropsNames())
    train = [json.loads(x) for x in (tmp_path / "o" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    evals = (tmp_path / "o" / "eval.jsonl").read_text(encoding="utf-8")
    kinds = Counter(r.get("augmented") for r in train)
    assert kinds["slot_swap"] == 48 == report["augmentation"]["slot_swap"]["added"] and "augmented" not in evals
    assert all(keeps_copies(r, ["name", "order_id", "product"]) for r in train)
    assert report["augmentation"]["back_translation"]["added"] < report["augmentation"]["back_translation"]["generated"]
    md = (tmp_path / "o" / "report.md").read_text(encoding="utf-8")
    assert "### Copy slots" in md and "| slot_swap | 48 | 48 |" in md
    assert any("copy slot 'product'" in w for w in report["warnings"])
