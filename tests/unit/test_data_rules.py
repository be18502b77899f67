"""The rule engine: validators, detectors, actions, profiles."""

from __future__ import annotations

import pytest

from zerotune.data.rules import RuleError, RuleSet, cn_id_valid, default_profile, luhn_valid

VALID_ID = "11010519491231002X"


def hits(text: str, rules: RuleSet | None = None) -> list[tuple[str, str]]:
    return [(m.rule, m.text) for m in (rules or RuleSet.default()).scan(text)]


def test_chinese_id_checksum_valid():
    assert cn_id_valid(VALID_ID)
    assert cn_id_valid(VALID_ID.lower())


def test_chinese_id_checksum_invalid():
    assert not cn_id_valid("110105194912310021")  # wrong check digit
    assert not cn_id_valid("11010519491331002X")  # month 13
    assert not cn_id_valid("1101051949123100")  # too short


def test_luhn_valid():
    assert luhn_valid("4111 1111 1111 1111")
    assert luhn_valid("5500-0000-0000-0004")


def test_luhn_invalid():
    assert not luhn_valid("4111 1111 1111 1112")
    assert not luhn_valid("4111")


def test_id_and_card_detected_only_when_they_validate():
    assert hits(f"身份证{VALID_ID}。") == [("cn_id", VALID_ID)]
    assert hits("身份证110105194912310021。") == []
    assert hits("卡号 4111 1111 1111 1111 ") == [("card", "4111 1111 1111 1111")]
    assert hits("编号 4111 1111 1111 1112 ") == []


def test_default_detectors():
    text = ("邮件 a.b@example.com，手机13812345678，电话 +1 555-123-4567，"
            "网址 https://example.com/a?b=1。日期 2024-01-15 或 2024年1月5日，证件 AB12345")
    assert hits(text) == [("email", "a.b@example.com"), ("cn_mobile", "13812345678"),
                          ("phone", "+1 555-123-4567"), ("url", "https://example.com/a?b=1"),
                          ("date", "2024-01-15"), ("date", "2024年1月5日"), ("doc_id", "AB12345")]


def test_plain_numbers_are_not_pii():
    assert hits("共 12 个，价格 3999 元，版本 3.11，端口 8080") == []


def test_redact_replaces_matches():
    verdict = RuleSet.default().apply("write to a@b.io or call 13812345678")
    assert verdict.text == "write to [EMAIL] or call [CN_MOBILE]"
    assert not verdict.blocked
    assert [(m.rule, m.start, m.end) for m in verdict.matches] == [("email", 9, 15), ("cn_mobile", 24, 35)]


def test_actions_block_and_flag():
    rules = RuleSet.from_dicts([{"name": "banned", "words": ["违禁词", "badword"], "action": "block"},
                                {"name": "order", "regex": r"\bORD-\d{6}\b", "action": "flag"}])
    verdict = rules.apply("this has a BadWord and ORD-123456 and 违禁词")
    assert verdict.text == "this has a BadWord and ORD-123456 and 违禁词"  # flag and block never rewrite
    assert [m.rule for m in verdict.matches] == ["order", "banned"]  # case-sensitive unless ignore_case
    assert verdict.blocked
    loose = RuleSet.from_dicts([{"name": "banned", "words": ["badword"], "action": "block", "ignore_case": True}])
    assert loose.apply("a BadWord").blocked
    assert not loose.apply("badwords").blocked  # whole words only for Latin words


def test_with_action_remaps_a_profile():
    assert RuleSet.default().with_action("block").apply("x@y.org").blocked


def test_overlaps_resolved_by_position_length_then_order():
    rules = RuleSet.from_dicts([{"name": "short", "regex": "abc", "action": "redact"},
                                {"name": "long", "regex": "abcdef", "action": "redact", "replacement": "#"}])
    assert rules.apply("xabcdefx").text == "x#x"


def test_profile_from_yaml(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: email, detector: email, action: flag}\n"
                    "  - {name: secret, regex: 'sk-[a-z0-9]{8}', action: redact, replacement: '<key>'}\n",
                    encoding="utf-8")
    verdict = RuleSet.from_yaml(str(path)).apply("key sk-abcd1234 from a@b.cn")
    assert verdict.text == "key <key> from a@b.cn"
    assert [m.rule for m in verdict.matches] == ["secret", "email"]


def test_default_profile_is_plain_dicts():
    profile = default_profile()
    assert all(set(r) == {"name", "detector", "action"} for r in profile)
    assert {r["name"] for r in profile} >= {"email", "cn_id", "card", "cn_mobile", "url", "date", "doc_id"}


@pytest.mark.parametrize("spec, message", [
    ({"name": "x", "detector": "nope"}, "unknown detector 'nope'"),
    ({"name": "x", "regex": "("}, "bad regex"),
    ({"name": "x", "regex": "a", "words": ["b"]}, "exactly one of"),
    ({"name": "x", "regex": "a", "action": "delete"}, "action must be one of"),
    ({"name": "x", "regex": "a", "colour": "red"}, "unknown key 'colour'"),
    ({"name": "x", "words": []}, "non-empty list"),
    ({"regex": "a"}, "name must be"),
])
def test_bad_rules_are_named(spec, message):
    with pytest.raises(RuleError, match=message):
        RuleSet.from_dicts([spec])


def test_duplicate_rule_names():
    with pytest.raises(RuleError, match="used twice"):
        RuleSet.from_dicts([{"name": "a", "regex": "x"}, {"name": "a", "regex": "y"}])
