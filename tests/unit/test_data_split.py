"""Seeded, stratified train/eval split."""

from __future__ import annotations

import numpy as np

from zerotune.data.split import eval_quotas, stratified_split


def test_quotas_follow_shares_and_keep_one_for_training():
    assert eval_quotas([50, 30, 20], 0.1) == [5, 3, 2]
    assert sum(eval_quotas([7, 7, 6], 0.25)) == 5
    assert eval_quotas([1, 2, 100], 0.5) == [0, 1, 50]


def test_split_is_stratified():
    groups = [0] * 80 + [1] * 20
    is_eval = stratified_split(groups, 0.25, seed=1)
    assert is_eval.sum() == 25
    assert is_eval[:80].sum() == 20 and is_eval[80:].sum() == 5


def test_split_is_seeded():
    groups = list(np.arange(200) % 3)
    a, b = stratified_split(groups, 0.2, seed=7), stratified_split(groups, 0.2, seed=7)
    assert (a == b).all()
    assert not (a == stratified_split(groups, 0.2, seed=8)).all()


def test_ineligible_rows_stay_in_train():
    eligible = [True] * 10 + [False] * 10
    is_eval = stratified_split([0] * 20, 0.5, seed=0, eligible=eligible)
    assert is_eval[10:].sum() == 0 and is_eval.sum() == 5


def test_zero_fraction_or_tiny_data_has_no_eval():
    assert stratified_split([0] * 10, 0.0, seed=0).sum() == 0
    assert stratified_split([0], 0.5, seed=0).sum() == 0
