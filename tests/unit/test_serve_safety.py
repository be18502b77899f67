"""The content filter: profiles, redaction, blocking, streaming across chunk boundaries, the audit log."""

from __future__ import annotations

import json
import random

import pytest

from zerotune.serve.safety import BLOCK_NOTICE, ContentFilter, FilterProfileError, load_rules, profiles_dir

PHONE = "12-345 6789"
TEXT = (f"Sure, call:{PHONE}! Or mail ann.lee@example.com, ID 11010519491231002X, "
        "card 4111 1111 1111 1111, mobile 13800138000.")


def _stream_all(filt: ContentFilter, pieces: list[str], request_id: str = "r") -> tuple[str, object]:
    s = filt.stream(request_id)
    out = "".join(s.feed(p) for p in pieces) + s.finish()
    return out, s


def test_shipped_profiles_load():
    names = sorted(p.stem for p in profiles_dir().glob("*.yaml"))
    assert {"pii", "seed", "strict"} <= set(names)
    for name in names:
        assert load_rules(name).rules


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(FilterProfileError, match="no-such.*known: .*pii"):
        ContentFilter.from_profile("no-such")


def test_off_means_no_filter():
    assert ContentFilter.from_profile(None) is None
    assert ContentFilter.from_profile("off") is None


def test_pii_profile_redacts_validated_pii_only():
    filt = ContentFilter.from_profile("pii")
    result = filt.filter_text(TEXT)
    assert result.text == ("Sure, call:[PHONE]! Or mail [EMAIL], ID [CN_ID], card [CARD], mobile [PHONE].")
    assert not result.blocked
    assert [e.rule for e in result.events] == ["phone", "email", "cn_id", "card", "cn_mobile"]
    # A wrong check digit / a failing Luhn sum is not PII, just digits.
    assert filt.filter_text("ID 110105194912310021, card 4111111111111112").events == ()


def test_seed_profile_has_the_seed_patterns():
    result = ContentFilter.from_profile("seed").filter_text("On 2024-03-01 cert AB1234 at https://ex.com/x.")
    assert result.text == "On [DATE] cert [ID_NUMBER] at [URL]."


def test_yaml_profile_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("rules:\n  - {name: code, regex: 'ORD-\\d{4}', action: redact, replacement: '#'}\n"
                    "  - {name: bad, words: [forbidden], action: flag}\n")
    result = ContentFilter.from_profile(str(path)).filter_text("ORD-1234 is forbidden")
    assert result.text == "# is forbidden"
    assert [(e.rule, e.action) for e in result.events] == [("code", "redact"), ("bad", "flag")]


def test_stream_catches_a_phone_split_at_every_boundary():
    filt = ContentFilter.from_profile("pii")
    text = f"Sure, call:{PHONE}!"
    for i in range(1, len(text)):
        for j in range(i + 1, len(text)):
            out, stream = _stream_all(filt, [text[:i], text[i:j], text[j:]])
            assert out == "Sure, call:[PHONE]!", (i, j)
            assert [e.rule for e in stream.events] == ["phone"]


def test_stream_matches_whole_text_filter_for_random_chunkings():
    filt = ContentFilter.from_profile("pii", hold_back=64)
    want = filt.filter_text(TEXT).text
    rng = random.Random(0)
    for _ in range(200):
        pieces, i = [], 0
        while i < len(TEXT):
            n = rng.randint(1, 9)
            pieces.append(TEXT[i:i + n])
            i += n
        assert _stream_all(filt, pieces)[0] == want


def test_stream_holds_back_only_the_window():
    filt = ContentFilter.from_profile("pii", hold_back=16)
    stream = filt.stream()
    released = stream.feed("x" * 40)
    assert released == "x" * 24  # all but the window goes out at once
    assert stream.feed("y") == "x"


def test_block_withholds_the_reply(tmp_path):
    filt = ContentFilter.from_profile("strict")
    result = filt.filter_text("This is CONFIDENTIAL material.")
    assert result.blocked and result.text == BLOCK_NOTICE
    out, stream = _stream_all(filt, list("Part one. This is confidential: ") + ["more ", "text"])
    assert stream.blocked
    assert out == "Part one. This is " + BLOCK_NOTICE
    assert stream.feed("later") == "" and stream.finish() == ""


def test_audit_log_records_events_without_raw_text(tmp_path):
    log = tmp_path / "audit" / "events.jsonl"
    filt = ContentFilter.from_profile("pii", audit_log=log)
    filt.filter_text(TEXT, request_id="req-1")
    _stream_all(filt, ["call:12-3", "45 67", "89 now"], request_id="req-2")
    raw = log.read_text()
    for secret in (PHONE, "6789", "ann.lee", "example.com", "11010519491231002X", "4111", "13800138000"):
        assert secret not in raw
    rows = [json.loads(line) for line in raw.splitlines()]
    assert len(rows) == 6
    assert set(rows[0]) == {"time", "request_id", "rule", "action", "length", "sha256"}
    assert rows[0]["rule"] == "phone" and rows[0]["length"] == len(PHONE) and len(rows[0]["sha256"]) == 64
    assert rows[-1]["request_id"] == "req-2" and rows[-1]["rule"] == "phone"
