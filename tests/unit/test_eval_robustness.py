"""Seeded input noise: deterministic, always a change, mild, CJK-aware."""

import random

import pytest

from zerotune.evaluate.robustness import KINDS, perturb, perturb_all, robustness_ratio

INPUTS = [
    "Convert the following sentence into JSON: the weather in Paris is sunny, 25 degrees.",
    "帮我查一下北京明天的天气，谢谢。",
    "hi",
    "Summarise: ok",
]


def test_perturb_all_is_deterministic_and_seed_dependent():
    assert perturb_all(INPUTS, seed=7) == perturb_all(INPUTS, seed=7)
    assert perturb_all(INPUTS, seed=7) != perturb_all(INPUTS, seed=8)


def test_perturb_all_does_not_depend_on_neighbours():
    alone = perturb_all(INPUTS[:1], seed=3)
    assert perturb_all(list(reversed(INPUTS)), seed=3)[-1] == alone[0]


@pytest.mark.parametrize("seed", range(20))
def test_perturb_changes_every_input(seed):
    for text, noisy in zip(INPUTS, perturb_all(INPUTS, seed)):
        assert noisy != text


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_a_text_it_applies_to(kind):
    text = "Hello world, this is a test." if kind != "width" else "你好，世界。"
    assert perturb(text, random.Random(0), [kind]) != text


def test_edits_are_mild():
    text = INPUTS[0]
    for seed in range(10):
        noisy = perturb(text, random.Random(seed))
        # ~1 edit per 15 chars, each edit moves at most 2 characters
        assert abs(len(noisy) - len(text)) <= len(text) // 15 + 9
        assert sum(a != b for a, b in zip(noisy, text)) < len(text)


def test_cjk_width_swaps_punctuation_both_ways():
    rng = random.Random(0)
    assert perturb("你好，世界", rng, ["width"]) == "你好,世界"
    assert perturb("你好!", random.Random(0), ["width"]) == "你好！"


def test_width_leaves_decimal_points_and_skips_latin_text():
    assert perturb("价格3.5元", random.Random(0), ["width"]) == "价格3.5元"
    assert perturb("plain, text.", random.Random(0), ["width"]) == "plain, text."


def test_empty_text_and_unknown_kind():
    assert perturb("", random.Random(0)) == ""
    with pytest.raises(ValueError, match="unknown perturbation kinds"):
        perturb("abc", random.Random(0), ["emoji"])


def test_robustness_ratio():
    assert robustness_ratio(0.8, 0.6) == pytest.approx(0.75)
    assert robustness_ratio(0.0, 0.0) == 1.0
    assert robustness_ratio(0.5, 0.6) == pytest.approx(1.2)
