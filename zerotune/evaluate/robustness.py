"""Seeded, mild noise on test inputs: does the tuned model still answer when users type sloppily?

The edits imitate real input mistakes (a neighbouring key, two swapped letters, shift held or
forgotten, stray spaces and punctuation, a Chinese IME switching between full- and half-width
punctuation) at about one edit per 15 characters, so the meaning stays recoverable by a reader.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence

from zerotune.evaluate.metrics import has_cjk

KINDS = ("typo", "swap", "case", "space", "punct", "width")
CHARS_PER_EDIT = 15

_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_HALF_TO_FULL = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；", "(": "（", ")": "）"}
_FULL_TO_HALF = {v: k for k, v in _HALF_TO_FULL.items()}
_NOISE_PUNCT = ",.!?;"


def _neighbours() -> dict[str, str]:
    """Keys left and right on the same QWERTY row: the commonest slip of a finger."""
    out = {}
    for row in _QWERTY_ROWS:
        for i, key in enumerate(row):
            out[key] = row[max(i - 1, 0):i] + row[i + 1:i + 2]
    return out


_NEIGHBOURS = _neighbours()


def _typo(text: str, rng: random.Random) -> str:
    spots = [i for i, c in enumerate(text) if c.lower() in _NEIGHBOURS]
    if not spots:
        return text
    i = rng.choice(spots)
    new = rng.choice(_NEIGHBOURS[text[i].lower()])
    return text[:i] + (new.upper() if text[i].isupper() else new) + text[i + 1:]


def _swap(text: str, rng: random.Random) -> str:
    spots = [i for i in range(len(text) - 1) if text[i] != text[i + 1] and not text[i:i + 2].isspace()]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _case(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if any(c.isalpha() and c.isascii() for c in w)]
    if not spots:
        return text
    i = rng.choice(spots)
    options = {words[i].upper(), words[i].lower(), words[i].capitalize()} - {words[i]}
    if options:
        words[i] = rng.choice(sorted(options))
    return " ".join(words)


def _space(text: str, rng: random.Random) -> str:
    spaces = [i for i, c in enumerate(text) if c == " "]
    if spaces and rng.random() < 0.5:
        i = rng.choice(spaces)
        # Drop a space or double it: both are what a hurried typist leaves behind.
        return text[:i] + ("" if rng.random() < 0.5 else "  ") + text[i + 1:]
    i = rng.randrange(1, len(text)) if len(text) > 1 else len(text)
    return text[:i] + " " + text[i:]


def _punct(text: str, rng: random.Random) -> str:
    marks = [i for i, c in enumerate(text) if c in string.punctuation or c in _FULL_TO_HALF]
    if marks and rng.random() < 0.5:
        i = rng.choice(marks)
        return text[:i] + text[i + 1:]
    cjk = has_cjk(text)
    # Stray marks land at word ends (or anywhere in unspaced CJK), never inside "25" or "Paris".
    spots = [i for i in range(1, len(text) + 1) if cjk or i == len(text) or text[i] == " "]
    i = rng.choice(spots)
    mark = rng.choice("，。！？" if cjk else _NOISE_PUNCT)
    return text[:i] + mark + text[i:]


def _is_decimal_point(text: str, i: int) -> bool:
    return text[i] == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def _width(text: str, rng: random.Random) -> str:
    spots = [i for i, c in enumerate(text)
             if c in _FULL_TO_HALF or (c in _HALF_TO_FULL and not _is_decimal_point(text, i))]
    if not spots:
        return text
    i = rng.choice(spots)
    swapped = _FULL_TO_HALF.get(text[i]) or _HALF_TO_FULL[text[i]]
    return text[:i] + swapped + text[i + 1:]


_EDITS: dict[str, Callable[[str, random.Random], str]] = {
    "typo": _typo, "swap": _swap, "case": _case, "space": _space, "punct": _punct, "width": _width,
}


def _applicable(text: str, kinds: Sequence[str]) -> list[str]:
    """The kinds that can change this text; width swaps only make sense in CJK text."""
    usable = []
    for kind in kinds:
        if kind == "width" and not has_cjk(text):
            continue
        if kind in ("typo", "case") and not any(c.isascii() and c.isalpha() for c in text):
            continue
        usable.append(kind)
    return usable


def perturb(text: str, rng: random.Random, kinds: Sequence[str] = KINDS) -> str:
    """Apply about one random edit per 15 characters (at least one) to a copy of text.

    Args:
        text: the clean input.
        rng: the source of randomness; the same seed gives the same edits.
        kinds: subset of KINDS to draw edits from.
    Returns:
        The noisy text, always different from text unless text is empty or no kind applies.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown perturbation kinds {sorted(unknown)}; choose from {KINDS}")
    usable = _applicable(text, kinds)
    if not text or not usable:
        return text
    edits = max(1, round(len(text) / CHARS_PER_EDIT))
    noisy = text
    # A swap can undo an earlier swap; a few extra draws make "always changed" hold in practice.
    for _ in range(edits + 8):
        noisy = _EDITS[rng.choice(usable)](noisy, rng)
        edits -= 1
        if edits <= 0 and noisy != text:
            break
    return noisy


def perturb_all(inputs: Sequence[str], seed: int, kinds: Sequence[str] = KINDS) -> list[str]:
    """Perturb every input deterministically.

    Each input gets its own generator seeded by (seed, text), so the noise on one row does not
    depend on which other rows are in the test set or in what order.

    Args:
        inputs: clean inputs.
        seed: the run's seed.
        kinds: subset of KINDS.
    Returns:
        The perturbed inputs, in order.
    """
    return [perturb(text, random.Random(f"{seed}\x00{text}"), kinds) for text in inputs]


def robustness_ratio(clean_score: float, perturbed_score: float) -> float:
    """How much of its clean score a model keeps on perturbed inputs.

    Args:
        clean_score: a metric on clean inputs.
        perturbed_score: the same metric on perturbed inputs.
    Returns:
        perturbed / clean; 1.0 when the clean score is 0 (there was nothing to lose).
    """
    if clean_score <= 0:
        return 1.0
    return perturbed_score / clean_score
