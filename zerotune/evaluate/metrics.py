"""Text metrics on (predictions, references) pairs, every score on a 0..1 scale.

All functions are pure and model-independent so they can be pinned by unit tests on hand-worked
examples. BLEU and chrF come from sacrebleu (the reference implementation everyone reports);
ROUGE-L is implemented here because the usual package drops CJK characters in its tokenizer,
which would score every Chinese pair as 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

# CJK ideographs (incl. extension A and compatibility), kana and hangul: scripts without spaces
# between words, where a character is the only safe token.
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_RE = re.compile(f"[{CJK_RANGES}]")
# One token per CJK character, otherwise a run of letters/digits; punctuation separates tokens.
_TOKEN_RE = re.compile(f"[{CJK_RANGES}]|(?:(?![{CJK_RANGES}])[^\\W_])+")
# Full-width separators are common in Chinese-typed records ("城市：北京；天气：晴").
_FIELD_SEPARATORS = str.maketrans({"：": ":", "；": ";"})

SCORE_KEYS = ("exact_match", "exact_match_normalized", "json_match", "field_match", "bleu4", "rouge_l", "chrf", "n")


def has_cjk(text: str) -> bool:
    """Whether the text contains any CJK (Chinese/Japanese/Korean) character."""
    return _CJK_RE.search(text) is not None


def _check(preds: Sequence[str], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


def _share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of rows whose prediction equals the reference after stripping surrounding whitespace.

    Args:
        preds: model outputs.
        refs: expected outputs, same length.
    Returns:
        The share in 0..1 (0.0 for no rows).
    """
    _check(preds, refs)
    return _share([p.strip() == r.strip() for p, r in zip(preds, refs)])


def exact_match_normalized(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of rows equal after collapsing whitespace runs and case-folding.

    Args:
        preds: model outputs.
        refs: expected outputs, same length.
    Returns:
        The share in 0..1.
    """
    _check(preds, refs)
    return _share([_normalize(p) == _normalize(r) for p, r in zip(preds, refs)])


def _json_equal(a: Any, b: Any) -> bool:
    # Python says True == 1, JSON does not: compare types of booleans explicitly.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


def _json_row(pred: str, ref: str) -> bool:
    try:
        expected = json.loads(ref)
    except ValueError:
        return _normalize(pred) == _normalize(ref)
    try:
        return _json_equal(json.loads(pred), expected)
    except ValueError:
        return False


def json_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of rows where both sides parse as JSON and are equal (key order ignored).

    Rows whose reference is not JSON fall back to normalized string equality, so the metric
    stays meaningful on mixed test sets.

    Args:
        preds: model outputs.
        refs: expected outputs, same length.
    Returns:
        The share in 0..1.
    """
    _check(preds, refs)
    return _share([_json_row(p, r) for p, r in zip(preds, refs)])


def parse_fields(text: str) -> frozenset[tuple[str, str]] | None:
    """Read a `key:value;key:value` record into a set of (key, value) pairs.

    Splits each field on its first colon so values such as times ("10:30") survive. Full-width
    ':' and ';' are accepted. Empty segments (a trailing ';') are ignored.

    Args:
        text: the record.
    Returns:
        The set of stripped pairs, or None when some segment has no colon or there are no fields.
    """
    segments = [s for s in text.translate(_FIELD_SEPARATORS).split(";") if s.strip()]
    if not segments or any(":" not in s for s in segments):
        return None
    pairs = (s.split(":", 1) for s in segments)
    return frozenset((k.strip(), v.strip()) for k, v in pairs)


def _field_row(pred: str, ref: str) -> bool:
    expected = parse_fields(ref)
    if expected is None:
        return _normalize(pred) == _normalize(ref)
    return parse_fields(pred) == expected


def field_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of rows whose `key:value;...` fields equal the reference's as a set (order ignored).

    Rows whose reference is not such a record fall back to normalized string equality.

    Args:
        preds: model outputs.
        refs: expected outputs, same length.
    Returns:
        The share in 0..1.
    """
    _check(preds, refs)
    return _share([_field_row(p, r) for p, r in zip(preds, refs)])


def _bleu_tokenizer(refs: Sequence[str]) -> str:
    # '13a' sees an unspaced Chinese sentence as one token, so any CJK reference switches to 'zh'.
    return "zh" if any(has_cjk(r) for r in refs) else "13a"


def bleu4(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu), tokenized 'zh' when references contain CJK, '13a' otherwise.

    Args:
        preds: model outputs.
        refs: one reference per prediction.
    Returns:
        BLEU in 0..1 (sacrebleu's score / 100); 0.0 for no rows.
    """
    _check(preds, refs)
    if not preds:
        return 0.0
    bleu = BLEU(tokenize=_bleu_tokenizer(refs))
    return bleu.corpus_score(list(preds), [list(refs)]).score / 100


def chrf(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2).

    Args:
        preds: model outputs.
        refs: one reference per prediction.
    Returns:
        chrF in 0..1; 0.0 for no rows.
    """
    _check(preds, refs)
    if not preds:
        return 0.0
    return CHRF().corpus_score(list(preds), [list(refs)]).score / 100


def sentence_chrf(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """chrF of each row on its own, used to rank the worst samples in the report.

    Args:
        preds: model outputs.
        refs: one reference per prediction.
    Returns:
        One score in 0..1 per row.
    """
    _check(preds, refs)
    metric = CHRF()
    return [metric.sentence_score(p, [r]).score / 100 for p, r in zip(preds, refs)]


def tokenize(text: str) -> list[str]:
    """Case-folded tokens for ROUGE-L: CJK characters one by one, other words split on
    whitespace and punctuation (punctuation itself is dropped)."""
    return _TOKEN_RE.findall(text.casefold())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time and O(len(b)) memory."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def _rouge_l_row(pred: str, ref: str) -> float:
    p, r = tokenize(pred), tokenize(ref)
    if not p and not r:
        return 1.0  # two empty outputs agree perfectly
    # F1 on LCS reduces to 2*LCS / (|p| + |r|); zero when either side is empty.
    return 2 * lcs_length(p, r) / (len(p) + len(r))


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean per-row ROUGE-L F-measure (beta 1) on tokens from `tokenize`.

    Args:
        preds: model outputs.
        refs: one reference per prediction.
    Returns:
        The mean in 0..1; 0.0 for no rows; a row of two empty strings scores 1.0.
    """
    _check(preds, refs)
    scores = [_rouge_l_row(p, r) for p, r in zip(preds, refs)]
    return sum(scores) / len(scores) if scores else 0.0


def score_all(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float | int]:
    """Every text metric at once, under the fixed keys of `SCORE_KEYS`.

    Args:
        preds: model outputs.
        refs: expected outputs, same length.
    Returns:
        {exact_match, exact_match_normalized, json_match, field_match, bleu4, rouge_l, chrf}
        as floats in 0..1, plus n, the number of rows.
    """
    _check(preds, refs)
    return {
        "exact_match": exact_match(preds, refs),
        "exact_match_normalized": exact_match_normalized(preds, refs),
        "json_match": json_match(preds, refs),
        "field_match": field_match(preds, refs),
        "bleu4": bleu4(preds, refs),
        "rouge_l": rouge_l(preds, refs),
        "chrf": chrf(preds, refs),
        "n": len(preds),
    }
