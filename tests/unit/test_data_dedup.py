"""Exact and near-duplicate detection."""

from __future__ import annotations

from zerotune.data.dedup import ExactDedup, NearDedup, row_digest


def conv(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_digest_is_16_bytes_and_depends_on_roles_and_order():
    d = row_digest(conv("q", "a"))
    assert len(d) == 16
    assert d == row_digest(conv("q", "a"))
    assert d != row_digest(conv("a", "q"))
    assert d != row_digest([{"role": "system", "content": "q"}, {"role": "assistant", "content": "a"}])


def test_exact_dedup_remembers_first_index():
    dedup = ExactDedup()
    d = row_digest(conv("q", "a"))
    assert dedup.first(d) is None
    dedup.add(d, 0)
    dedup.add(d, 5)
    assert dedup.first(d) == 0 and len(dedup) == 1


LONG = ("患者发热三天，体温三十八度五，伴有咳嗽和乏力，夜间症状加重，没有胸痛，也没有呼吸困难。"
        "建议多饮水、注意休息，监测体温，如果持续高热超过三天或者出现呼吸急促，请及时到医院就诊。")


def test_near_duplicates_are_found_and_distinct_rows_kept():
    near = NearDedup(threshold=0.8)
    assert near.add(0, conv(LONG, "好的")) is None
    assert near.add(1, conv(LONG + "谢谢。", "好的")) == 0  # one short phrase added
    assert near.add(2, conv("How do I reverse a list in Python?", "Use items[::-1].")) is None
    assert near.check(conv(LONG.replace("三天", "3天", 1), "好的")) == 0
    assert near.check(conv("完全不同的问题，关于天气和出行安排", "明天晴")) is None


def test_threshold_is_respected():
    strict = NearDedup(threshold=0.99)
    strict.add(0, conv(LONG, "好的"))
    assert strict.check(conv(LONG[:60], "好的")) is None
