"""Cleaning rules: safe by default, the destructive ones only when asked."""

from __future__ import annotations

import json

from zerotune.config import CleanConfig
from zerotune.data import clean
from zerotune.data.clean import Cleaner

CODE = "```python\ndef f(x):\n    return {'a': x}  # <b>not html</b>\n```"
JSON_ANSWER = '{"name": "zerotune", "tags": ["a", "b"], "lr": 4e-4}'


def test_defaults_leave_code_and_json_alone():
    c = Cleaner(CleanConfig())
    assert c.text(CODE) == CODE
    assert c.text(JSON_ANSWER) == JSON_ANSWER
    assert json.loads(c.text(JSON_ANSWER))["lr"] == 4e-4


def test_seed_regex_is_opt_in_and_destroys_json():
    assert Cleaner(CleanConfig()).text(JSON_ANSWER) == JSON_ANSWER
    out = Cleaner(CleanConfig(seed_regex=True)).text(JSON_ANSWER)
    assert out == "name zerotune tags a b lr 4e4"
    assert Cleaner(CleanConfig(seed_regex=True)).text("你好，世界！abc_1") == "你好世界abc_1"


def test_nfkc_maps_fullwidth_letters_but_keeps_chinese_punctuation():
    assert clean.nfkc("Ｈｅｌｌｏ１２３，世界！…　好") == "Hello123，世界！…　好"
    assert clean.nfkc("e\u0301") == "\u00e9"
    assert clean.nfkc("ﬁ ① ㎏") == "fi 1 kg"


def test_control_and_zero_width_characters_are_dropped_but_emoji_joiners_stay():
    assert clean.control_chars("a\x00b\x07c\u200bd\ufeffe\tf\ng") == "abcde\tf\ng"
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert clean.control_chars(family) == family


def test_whitespace_keeps_indentation_but_trims_lines_and_blank_runs():
    assert clean.whitespace("  a  \r\n    b\t\n\n\n\n\nc  ") == "a\n    b\n\n\nc"


def test_html_tags_and_entities_outside_code():
    text = "<p>Hello&nbsp;<b>world</b></p>see `<b>x</b>` and 3 &lt; 4"
    assert clean.strip_html(text) == "Hello\xa0world\nsee `<b>x</b>` and 3 < 4"
    doc = "<!DOCTYPE html><html><body><p>x</p></body></html>"
    assert clean.strip_html(doc) == doc
    assert clean.strip_html("List<T> and a<b") == "List<T> and a<b"


def test_punctuation_width_options():
    assert Cleaner(CleanConfig(punct_width="half")).text("你好，世界！（测试）。") == "你好,世界!(测试)."
    assert Cleaner(CleanConfig(punct_width="full")).text("你好,世界! f(x), ok.") == "你好，世界！ f(x), ok."
    assert Cleaner(CleanConfig()).text("你好，世界！") == "你好，世界！"


def test_cleaner_counts_changes_per_rule():
    c = Cleaner(CleanConfig())
    c.text("<b>x</b>  ")
    c.text("clean text")
    summary = c.summary()
    assert summary["html"] == {"texts_changed": 1, "chars_removed": 7}
    assert summary["whitespace"] == {"texts_changed": 1, "chars_removed": 2}
    assert "seed_regex" not in summary


def test_messages_reports_a_message_cleaned_to_nothing():
    c = Cleaner(CleanConfig())
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<br>\u200b "}]
    assert c.messages(msgs) == (msgs, "messages[1].content")
    same = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert c.messages(same)[0] is same


def test_disabled_rules_do_nothing():
    off = CleanConfig(nfkc=False, control_chars=False, whitespace=False, html=False)
    text = " <b>Ｈｉ</b>\x00 "
    assert Cleaner(off).text(text) == text
