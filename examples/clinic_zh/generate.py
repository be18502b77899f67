"""Generate examples/clinic_zh/{train,eval}.jsonl: Chinese clinic notes -> key:value;key:value.

Run from anywhere:  python examples/clinic_zh/generate.py
The output is deterministic (fixed seed, no external data), so re-running rewrites both files
byte for byte.

    python examples/clinic_zh/generate.py --seen-wordings FILE

writes instead a diagnostic train split (benchmarks/quality.py's task "zh-seen"): the train frames and
copy values, but the severity, history and no-history wordings of train AND eval. Scored on the same
eval rows, it separates copying values in frames never seen (still unseen there) from mapping
wordings never seen (seen there).

Output fields, in this order:  性别:男|女;年龄:<digits>;症状:<span>;程度:轻|中|重;病程:<span>;既往史:<span>|无
性别, 程度 and a "no history" 既往史 are categorical (mapped from wording); 年龄, 症状, 病程 and a
present 既往史 are copied verbatim from the note.

The eval split measures generalisation, not memorisation: its note frames, its wordings of the
categorical fields and its copy values (ages, symptoms, durations, histories) come from pools that
are disjoint from the train pools, and the script asserts that no eval copy value occurs anywhere in
the train rows (and vice versa).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240612
N_TRAIN = 400
N_EVAL = 100
NO_HISTORY_RATE = 0.25
KEYS = ("性别", "年龄", "症状", "程度", "病程", "既往史")
COPY_KEYS = ("年龄", "症状", "病程", "既往史")
HERE = Path(__file__).resolve().parent

# {sx}: 男/女; {sxp}: 先生/女士; {sev}{sym}: severity wording + symptom; {dur}; {hx}: history clause.
TRAIN = {
    "frames": [
        "患者{sx}，{age}岁，主诉{sev}{sym}{dur}，{hx}。",
        "{sx}，{age}岁。{sev}{sym}{dur}，{hx}。",
        "{sx}性患者，{age}岁，因{sev}{sym}持续{dur}就诊，{hx}。",
        "门诊记录：患者{sx}，{age}岁，{dur}前出现{sev}{sym}，{hx}。",
        "{age}岁{sx}性，{sev}{sym}已{dur}，{hx}。",
        "患者，{sx}，{age}岁，{hx}，此次因{sev}{sym}{dur}来诊。",
        "性别{sx}，年龄{age}岁，{sev}{sym}约{dur}，{hx}。",
        "患者{sx}性，今年{age}岁，自述{sev}{sym}{dur}，{hx}。",
        "{sx}患者{age}岁，{hx}，近{dur}出现{sev}{sym}。",
        "就诊者{sx}，{age}岁，{sev}{sym}反复发作{dur}，{hx}。",
    ],
    "sex": {"男": "男", "女": "女"},
    "severity": {
        "轻": ["轻微", "有点"],
        "中": ["明显", "中度"],
        "重": ["剧烈", "严重"],
    },
    "history": ["既往{h}", "有{h}病史", "既往有{h}"],
    "no_history": ["既往体健", "否认既往病史"],
    "symptoms": [
        "背痛", "头痛", "咳嗽", "发热", "腹泻", "胸闷", "头晕", "恶心", "呕吐", "腹痛",
        "咽痛", "失眠", "乏力", "心悸", "气短", "关节痛", "腰痛", "牙痛", "耳鸣", "鼻塞",
        "皮疹", "便秘", "尿频", "视物模糊", "胃胀", "反酸", "手麻", "膝盖疼痛", "肩痛",
        "颈部酸痛", "口干", "盗汗", "食欲不振", "水肿", "咳痰", "尿痛", "流涕", "腹胀",
        "足跟痛", "肌肉酸痛",
    ],
    "durations": ["一天", "两天", "三天", "四天", "一周", "两周", "十天", "一个月", "三个月", "半年"],
    "histories": [
        "高血压", "糖尿病", "冠心病", "哮喘", "慢性胃炎", "甲亢", "乙肝", "痛风", "高血脂",
        "胆结石", "肾结石", "类风湿关节炎", "癫痫", "贫血", "过敏性鼻炎", "湿疹", "慢性支气管炎",
        "青光眼", "骨质疏松", "痔疮",
    ],
}

EVAL = {
    "frames": [
        "{sxp}，{age}周岁，{dur}来出现{sev}{sym}，{hx}。",
        "来诊{sxp}{age}岁，{hx}；本次感到{sev}{sym}，已有{dur}。",
        "{age}岁{sx}病人，{hx}，自{dur}前起有{sev}{sym}。",
        "接诊一位{age}岁{sxp}，诉{sev}{sym}{dur}，{hx}。",
        "病人{sx}，{age}岁；{sev}{sym}{dur}；{hx}。",
        "{sxp}（{age}岁）{dur}内反复出现{sev}{sym}，{hx}。",
    ],
    "sex": {"男": "先生", "女": "女士"},
    "severity": {
        "轻": ["轻度", "少许"],
        "中": ["较明显的", "中等程度的"],
        "重": ["重度", "难以忍受的"],
    },
    "history": ["曾患{h}", "{h}病史多年", "合并{h}"],
    "no_history": ["平素身体健康", "无基础疾病"],
    "symptoms": [
        "胸痛", "眩晕", "咽喉肿痛", "呼吸困难", "心慌", "黑便", "声音嘶哑", "吞咽困难",
        "牙龈出血", "口腔溃疡", "下肢麻木", "眼睛干涩", "手腕疼痛", "胁痛", "腹部绞痛", "足踝肿痛",
        "喘息", "胃灼热", "小腿抽筋", "耳痛", "排尿困难", "鼻出血", "低热",
    ],
    "durations": ["五天", "六天", "一星期", "三周", "两个月", "半个月", "四个月"],
    "histories": [
        "脑梗死", "房颤", "肺结核", "银屑病", "帕金森病", "慢性肾病", "肝硬化", "白内障",
        "抑郁症", "慢性咽炎", "桥本甲状腺炎", "胰腺炎",
    ],
}

# Ages are copied digits too, so the two splits draw from disjoint age sets.
_AGES = list(range(18, 90))
random.Random(SEED + 1).shuffle(_AGES)
TRAIN["ages"], EVAL["ages"] = sorted(_AGES[15:]), sorted(_AGES[:15])


def make_split(rng: random.Random, pool: dict, n: int) -> list[dict]:
    """Rows for one split; severities are balanced by cycling through them before shuffling."""
    levels = [list(pool["severity"])[i % 3] for i in range(n)]
    rng.shuffle(levels)
    seen: set[str] = set()
    rows = []
    for level in levels:
        while True:
            row = make_row(rng, pool, level)
            if row["input"] not in seen:
                seen.add(row["input"])
                rows.append(row)
                break
    return rows


def make_row(rng: random.Random, pool: dict, level: str) -> dict:
    sex = rng.choice(("男", "女"))
    age = str(rng.choice(pool["ages"]))
    sym = rng.choice(pool["symptoms"])
    dur = rng.choice(pool["durations"])
    if rng.random() < NO_HISTORY_RATE:
        hist, hx = "无", rng.choice(pool["no_history"])
    else:
        hist = rng.choice(pool["histories"])
        hx = rng.choice(pool["history"]).format(h=hist)
    text = rng.choice(pool["frames"]).format(
        sx=sex, sxp=pool["sex"][sex], age=age, sev=rng.choice(pool["severity"][level]),
        sym=sym, dur=dur, hx=hx,
    )
    values = (sex, age, sym, level, dur, hist)
    output = ";".join(f"{k}:{v}" for k, v in zip(KEYS, values))
    return {"input": text, "output": output, "category": level}


def parse(output: str) -> dict:
    return dict(pair.split(":", 1) for pair in output.split(";"))


def copy_values(rows: list[dict]) -> set[str]:
    return {v for r in rows for k, v in parse(r["output"]).items() if k in COPY_KEYS and v != "无"}


def check(train: list[dict], evals: list[dict]) -> None:
    """Fail loudly if anything lets eval be solved by memorising train."""
    assert not set(TRAIN["frames"]) & set(EVAL["frames"]), "shared frame"
    for kind in ("history", "no_history"):
        assert not set(TRAIN[kind]) & set(EVAL[kind]), f"shared {kind} wording"
    for level in TRAIN["severity"]:
        assert not set(TRAIN["severity"][level]) & set(EVAL["severity"][level])
    for a_rows, b_rows, what in ((evals, train, "eval value in train"),
                                 (train, evals, "train value in eval")):
        b_text = "\n".join(r["input"] + "\n" + r["output"] for r in b_rows)
        leaked = sorted(v for v in copy_values(a_rows) if v in b_text)
        assert not leaked, f"{what}: {leaked[:10]}"
    for row in train + evals:
        record = parse(row["output"])
        assert tuple(record) == KEYS, row
        for key in COPY_KEYS:
            assert record[key] == "无" or record[key] in row["input"], (key, row)
        assert 18 <= len(row["input"]) <= 50, row["input"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def seen_wordings_train(evals: list[dict]) -> list[dict]:
    """The diagnostic train split: TRAIN's pools with eval's severity, history and no-history wordings
    added; frames and copy values stay train's."""
    severity = {level: TRAIN["severity"][level] + EVAL["severity"][level] for level in TRAIN["severity"]}
    pool = {**TRAIN, "severity": severity, **{kind: TRAIN[kind] + EVAL[kind] for kind in ("history", "no_history")}}
    rows = make_split(random.Random(SEED + 2), pool, N_TRAIN)
    train_text = "\n".join(r["input"] + "\n" + r["output"] for r in rows)
    assert not [v for v in copy_values(evals) if v in train_text], "eval value in the diagnostic train split"
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seen-wordings", type=Path, default=None,
                        help="write only the diagnostic train split (wordings of eval included) here")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    train = make_split(rng, TRAIN, N_TRAIN)
    evals = make_split(rng, EVAL, N_EVAL)
    check(train, evals)
    if args.seen_wordings:
        write_jsonl(args.seen_wordings, seen_wordings_train(evals))
        print(f"wrote {N_TRAIN} diagnostic train rows (eval's wordings included) to {args.seen_wordings}")
        return
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval rows to {HERE}")


if __name__ == "__main__":
    main()
