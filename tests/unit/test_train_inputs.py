"""What `zerotune train --data` trains on: raw files get prepare's cleaning and slot augmentation,
prepared folders are taken as they are."""

import json
from pathlib import Path

from zerotune.config import build_config
from zerotune.train.inputs import training_rows

ROOT = Path(__file__).resolve().parents[2]
EN = ROOT / "examples" / "support_en"


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _copied_values(rows: list[dict]) -> set[str]:
    out = set()
    for row in rows:
        answer = json.loads(row["messages"][-1]["content"])
        out.update(str(answer[k]) for k in ("name", "order_id", "product") if answer[k] is not None)
    return out


def test_raw_file_is_cleaned_deduplicated_and_slot_swapped(tmp_path):
    rows = [json.loads(line) for line in EN.joinpath("train.jsonl").read_text().splitlines()][:60]
    dirty = rows + [rows[0]] + [{**rows[1], "input": rows[1]["input"] + "  <b></b>\u200b "}]
    cfg = build_config({"data": {"train": _write(tmp_path / "raw.jsonl", dirty), "eval": str(EN / "eval.jsonl")}})
    splits = training_rows(cfg.data, seed=0)
    originals = [r for r in splits.train if "augmented" not in r]
    made = [r for r in splits.train if r.get("augmented")]
    assert len(originals) == 60  # the duplicate row is gone, the dirty one cleaned into a duplicate of row 1
    assert any("exact duplicates" in n for n in splits.notes)
    assert made and {r["augmented"] for r in made} == {"slot_swap", "synonym_swap"}  # English: both by default
    assert any(n.startswith("augment: +") and "slot-swap" in n for n in splits.notes)
    assert any(n.startswith("augment: +") and "synonym-swap" in n and "cue words" in n for n in splits.notes)
    for row in made:  # swapped rows stay consistent: every copied value of the answer is in the input
        answer = json.loads(row["messages"][-1]["content"])
        user = row["messages"][-2]["content"]
        assert all(str(answer[k]) in user for k in ("name", "order_id", "product") if answer[k] is not None), row
    eval_only = _copied_values(splits.eval) - _copied_values(originals)
    assert eval_only and not eval_only & _copied_values(made)  # no eval value leaks into training
    again = training_rows(cfg.data, seed=0)
    assert again.train == splits.train  # same seed, same rows


def test_augmentation_can_be_switched_off(tmp_path):
    cfg = build_config({"data": {"train": str(EN / "train.jsonl"), "eval": str(EN / "eval.jsonl"),
                                 "prepare": {"slot_swap": "off", "synonym_swap": "off"}}})
    splits = training_rows(cfg.data, seed=0)
    assert len(splits.train) == 400 and not any("augmented" in r for r in splits.train)
    assert any("augment: none" in n and "off in the config" in n for n in splits.notes)


def test_prepared_folder_is_taken_as_it_is(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a  "}, {"role": "assistant", "content": "b"}]}] * 2
    folder = tmp_path / "prepared"
    folder.mkdir()
    _write(folder / "train.jsonl", rows)
    _write(folder / "eval.jsonl", rows[:1])
    splits = training_rows(build_config({"data": {"train": str(folder)}}).data, seed=0)
    assert splits.train == rows and splits.eval == rows[:1] and not splits.notes


def test_augmented_copies_do_not_lengthen_training():
    from zerotune.train.recipe import _total_steps

    cfg = build_config({"train": {"epochs": 2, "batch_size": 8}})
    assert _total_steps(cfg, 400) == (100, 2)  # no augmentation: 2 passes over 400 rows
    assert _total_steps(cfg, 800, 400) == (100, 1)  # 400 swapped copies: the same 100 steps, one pass
    assert _total_steps(build_config({"train": {"max_steps": 7}}), 800, 400) == (7, 1)


def test_epochs_stay_whole_passes_without_augmentation():
    from zerotune.train.recipe import _total_steps

    cfg = build_config({"train": {"epochs": 3, "batch_size": 8}})
    assert _total_steps(cfg, 10) == (6, 3)  # 2 steps a pass (8 + 2 examples), 3 passes
