"""The shipped example datasets are well formed and their eval split is unseen in train.

Reads only examples/*/{train,eval}.jsonl, never the generators, so it checks what users get.
"""

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EN_KEYS = ["name", "order_id", "product", "issue", "action"]
EN_COPY = ("name", "order_id", "product")
ZH_KEYS = ["性别", "年龄", "症状", "程度", "病程", "既往史"]
ZH_COPY = ("年龄", "症状", "病程", "既往史")
SIZES = {"train": 400, "eval": 100}


def load(task: str, split: str) -> list[dict]:
    lines = (EXAMPLES / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def parse_zh(output: str) -> dict:
    pairs = [pair.split(":", 1) for pair in output.split(";")]
    assert all(len(p) == 2 and p[0] and p[1] for p in pairs), output
    return dict(pairs)


def en_copies(row: dict) -> dict:
    record = json.loads(row["output"])
    return {k: record[k] for k in EN_COPY if record[k] is not None}


def zh_copies(row: dict) -> dict:
    record = parse_zh(row["output"])
    return {k: record[k] for k in ZH_COPY if record[k] != "无"}


COPIES = {"support_en": en_copies, "clinic_zh": zh_copies}


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
@pytest.mark.parametrize("split", ["train", "eval"])
def test_rows_are_well_formed(task, split):
    rows = load(task, split)
    assert len(rows) == SIZES[split]
    for row in rows:
        assert isinstance(row["input"], str) and row["input"].strip()
        assert isinstance(row["output"], str) and "\n" not in row["output"]
        assert isinstance(row["category"], str) and row["category"]
    assert len({r["input"] for r in rows}) == len(rows), "duplicate inputs"


@pytest.mark.parametrize("split", ["train", "eval"])
def test_support_en_outputs(split):
    for row in load("support_en", split):
        record = json.loads(row["output"])
        assert list(record) == EN_KEYS
        assert record["issue"] == row["category"]
        assert record["order_id"] is None or record["order_id"].isdigit()
        assert 1 <= len(record["name"].split()) <= 3
        assert 1 <= len(record["product"].split()) <= 2
        for key, value in en_copies(row).items():
            assert value in row["input"], (key, row)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_clinic_zh_outputs(split):
    for row in load("clinic_zh", split):
        record = parse_zh(row["output"])
        assert list(record) == ZH_KEYS
        assert record["性别"] in ("男", "女")
        assert record["程度"] == row["category"] and record["程度"] in ("轻", "中", "重")
        assert record["年龄"].isdigit()
        for key, value in zh_copies(row).items():
            assert value in row["input"], (key, row)


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_eval_copy_values_never_seen_in_train(task):
    train, evals = load(task, "train"), load(task, "eval")
    train_text = "\n".join(r["input"] + "\n" + r["output"] for r in train)
    eval_values = {v for row in evals for v in COPIES[task](row).values()}
    leaked = sorted(v for v in eval_values if v in train_text)
    assert not leaked, f"eval copy values found in train: {leaked[:10]}"
    train_values = {v for row in train for v in COPIES[task](row).values()}
    assert not train_values & eval_values


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_eval_labels_are_covered_by_train(task):
    train_labels = {r["category"] for r in load(task, "train")}
    assert {r["category"] for r in load(task, "eval")} <= train_labels
