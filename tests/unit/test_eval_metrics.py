"""Each metric pinned on examples worked by hand."""

import math

import pytest
from sacrebleu.metrics import BLEU

from zerotune.evaluate import metrics as m


def test_exact_match_strips_only_surrounding_whitespace():
    preds = ["  Paris\n", "paris", "New  York"]
    refs = ["Paris", "Paris", "New York"]
    assert m.exact_match(preds, refs) == pytest.approx(1 / 3)


def test_exact_match_normalized_collapses_whitespace_and_case():
    preds = ["  Paris\n", "paris", "New \t York", "Rome"]
    refs = ["Paris", "Paris", "new york", "Paris"]
    assert m.exact_match_normalized(preds, refs) == pytest.approx(3 / 4)


def test_json_match_ignores_key_order_and_falls_back_when_reference_is_not_json():
    preds = ['{"b": 2, "a": [1, {"c": null}]}', '{"a": 1}', "not json", "Hello  World", '{"a": 1}']
    refs = ['{"a": [1, {"c": null}], "b": 2}', '{"a": 2}', '{"a": 1}', "hello world", '{"a": true}']
    # equal, different value, unparseable prediction, non-JSON ref -> normalized equality, true != 1
    assert m.json_match(preds, refs) == pytest.approx(2 / 5)


def test_field_match_compares_sets_of_fields():
    preds = ["city:Beijing; weather:sunny", "time:10:30;city:Paris", "城市：北京；天气：晴", "city:Rome", "plain"]
    refs = ["weather:sunny;city:Beijing;", "city:Paris;time:10:31", "天气:晴;城市:北京", "city:Rome;weather:rain", "Plain"]
    # reordered + trailing ';' ok, value differs, full-width separators ok, field missing, fallback ok
    assert m.field_match(preds, refs) == pytest.approx(3 / 5)
    assert m.parse_fields("time:10:30") == frozenset({("time", "10:30")})
    assert m.parse_fields("no fields here") is None


def test_bleu4_chinese_worked_by_hand():
    # 'zh' tokenization splits every Chinese character. pred 今天天气很好 vs ref 今天天气不错:
    # 1-grams 4/6, 2-grams 3/5 (今天 天天 天气), 3-grams 2/4, 4-grams 1/3, equal lengths so BP = 1.
    # BLEU = (4/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/15) ** 0.25
    expected = (1 / 15) ** 0.25
    assert m.bleu4(["今天天气很好"], ["今天天气不错"]) == pytest.approx(expected, abs=1e-4)
    sentence = BLEU(tokenize="zh", effective_order=True).sentence_score("今天天气很好", ["今天天气不错"])
    assert sentence.score / 100 == pytest.approx(expected, abs=1e-4)


def test_bleu4_without_cjk_uses_13a_and_identity_scores_one():
    assert m.bleu4(["the cat sat on the mat ."], ["the cat sat on the mat."]) == pytest.approx(1.0)
    assert m.bleu4(["completely different words here"], ["the cat sat on the mat"]) == 0.0


def test_rouge_l_worked_by_hand():
    # LCS(the cat on a mat / the cat sat on the mat) = "the cat on mat" = 4 tokens.
    # P = 4/5, R = 4/6, F1 = 2PR/(P+R) = 8/11.
    assert m.rouge_l(["The cat, on a mat."], ["the cat sat on the mat"]) == pytest.approx(8 / 11)


def test_rouge_l_chinese_uses_characters():
    # LCS(今天很好 / 今天天气很好) = 今天很好 (4 chars): F1 = 2*4 / (4+6) = 0.8
    assert m.rouge_l(["今天很好"], ["今天天气很好"]) == pytest.approx(0.8)
    assert m.tokenize("温度25度, OK") == ["温", "度", "25", "度", "ok"]


def test_rouge_l_edge_cases_and_mean():
    assert m.rouge_l(["", "a b"], ["", "c d"]) == pytest.approx(0.5)
    assert m.lcs_length("ABCBDAB", "BDCABA") == 4


def test_chrf_identity_and_ordering():
    assert m.chrf(["hello world"], ["hello world"]) == pytest.approx(1.0)
    close = m.chrf(["hello wrld"], ["hello world"])
    far = m.chrf(["goodbye moon"], ["hello world"])
    assert 0 <= far < close < 1
    assert m.sentence_chrf(["hello world", "xyz"], ["hello world", "hello"]) == [pytest.approx(1.0), 0.0]


def test_score_all_has_fixed_keys_and_unit_range():
    scores = m.score_all(["Paris", "今天天气很好"], ["Paris", "今天天气不错"])
    assert tuple(scores) == m.SCORE_KEYS
    assert scores["n"] == 2
    assert scores["exact_match"] == 0.5
    assert all(0 <= v <= 1 for k, v in scores.items() if k != "n")


def test_empty_and_mismatched_inputs():
    empty = m.score_all([], [])
    assert empty["n"] == 0 and all(v == 0 for v in empty.values())
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        m.exact_match(["a", "b"], ["a"])
    assert not math.isnan(m.bleu4([""], ["a b c"]))
