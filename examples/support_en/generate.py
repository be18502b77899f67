"""Generate examples/support_en/{train,eval}.jsonl: customer messages -> one-line JSON.

Run from anywhere:  python examples/support_en/generate.py
The output is deterministic (fixed seed, no external data), so re-running rewrites both files
byte for byte.

    python examples/support_en/generate.py --seen-wordings FILE

writes instead a diagnostic train split (benchmarks/quality.py's task "en-seen"): the train frames,
names, products and order ids, but every issue and action worded with the train AND the eval
wordings. Scored on the same eval rows, it separates the two things eval tests: copying values and
frames never seen (still unseen there) from mapping label wordings never seen (seen there).

The eval split measures generalisation, not memorisation: its sentence frames, its wordings of
each issue/action and its copy values (names, order ids, products) come from pools that are
disjoint from the train pools, and the script asserts that no eval copy value occurs anywhere in
the train rows (and vice versa).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 20240611
N_TRAIN = 400
N_EVAL = 100
NO_ORDER_RATE = 0.1  # some customers give no order id; the output then says null
KEYS = ("name", "order_id", "product", "issue", "action")
HERE = Path(__file__).resolve().parent

# Which actions make sense for each issue; both splits share these labels.
ACTIONS_FOR = {
    "damaged": ("refund", "replacement", "callback"),
    "late": ("track", "cancel", "refund"),
    "wrong_item": ("replacement", "refund", "callback"),
    "missing": ("replacement", "refund", "callback"),
    "billing": ("refund", "callback", "cancel"),
    "defective": ("replacement", "refund", "callback"),
}

# ---------------------------------------------------------------- train pools
TRAIN = {
    "frames": [
        "Hi, this is {name}. On order #{oid}, {issue}. {action}",
        "Hello, my name is {name} and {issue} (order {oid}). {action}",
        "{name} here. Order number {oid}: {Issue}. {action}",
        "Hey, {name} writing about order #{oid}. {Issue}. {action} Thanks!",
        "Good morning, I'm {name}. {Issue}, order {oid}. {action}",
        "Dear support, {issue} on my order #{oid}. {action} Regards, {name}",
        "This is {name} again. For order number {oid}, {issue}. {action}",
        "Hi team, it's {name}. Quick note about order {oid}: {issue}. {action}",
        "Order #{oid} - {issue}. {action} Name: {name}.",
        "My name is {name}, order {oid}. {Issue}. {action}",
    ],
    "frames_no_order": [
        "Hi, this is {name}. {Issue}. {action}",
        "Hello, {name} here, I don't have my order number handy but {issue}. {action}",
    ],
    "issue": {
        "damaged": [
            "the {p} arrived cracked",
            "the {p} came broken",
            "the {p} was smashed inside the box",
            "the {p} showed up dented",
        ],
        "late": [
            "the {p} still hasn't arrived",
            "the {p} is two weeks late",
            "the {p} is way past the delivery date",
        ],
        "wrong_item": [
            "I received the wrong item instead of the {p}",
            "you sent me something other than the {p}",
            "the box had a different product, not the {p}",
        ],
        "missing": [
            "the {p} was not in the box",
            "the package came but the {p} was missing",
            "the {p} was left out of my package",
        ],
        "billing": [
            "I was charged twice for the {p}",
            "the price I paid for the {p} is wrong",
            "my card was overcharged for the {p}",
        ],
        "defective": [
            "the {p} stopped working after a day",
            "the {p} won't turn on",
            "the {p} makes a grinding noise and then fails",
        ],
    },
    "action": {
        "refund": ["I want my money back.", "Please refund me.", "Can I get a refund?"],
        "replacement": [
            "Can you send a replacement?",
            "Please send me a new one.",
            "I need a replacement shipped.",
        ],
        "cancel": ["Please cancel the order.", "I'd like to cancel it.", "Cancel it please."],
        "track": [
            "Where is it right now?",
            "Can you track it for me?",
            "Please send me the tracking info.",
        ],
        "callback": [
            "Please call me back.",
            "Can someone phone me?",
            "I'd like a call from an agent.",
        ],
    },
    "first": [
        "Maria", "James", "Priya", "Tom", "Olivia", "Ahmed", "Sofia", "Lucas", "Hannah", "Kenji",
        "Fatima", "Daniel", "Chloe", "Mateo", "Grace", "Omar", "Elena", "Noah", "Aisha", "Ben",
        "Yuki", "Carlos", "Emma", "Ravi", "Laura", "Diego", "Nina", "Samuel", "Isabel", "Wei",
        "Zoe", "Marco", "Amara", "Peter", "Leila", "Hugo", "Ingrid", "Tariq", "Rosa", "Felix",
        "Mei", "Jonas", "Alice", "Kofi", "Sara",
    ],
    "first_compound": ["Anna Maria", "Jean-Luc", "Mary-Kate", "Jose Luis", "Ana Sofia"],
    "last": [
        "Lopez", "Smith", "Patel", "Nguyen", "Kim", "Garcia", "Brown", "Muller", "Rossi",
        "Tanaka", "Okafor", "Johansson", "Silva", "Cohen", "Ivanova", "Dubois", "Novak",
        "Haddad", "Kowalski", "O'Brien", "Fernandez", "Schmidt", "Chen", "Murphy", "Yilmaz",
        "Andersen", "Costa", "Moreau", "Reyes", "Wright", "Hughes", "Sato", "Mensah",
        "Lindqvist", "Petrov",
    ],
    "last_hyphen": ["Smith-Jones", "Garcia-Lorca", "Baker-Holt", "Lee-Chang"],
    "last_particle": ["van Dijk", "de Souza", "von Berg", "Mac Lean"],
    "products": [
        "blender", "toaster", "air fryer", "coffee maker", "yoga mat", "desk lamp",
        "phone charger", "backpack", "rice cooker", "hair dryer", "electric kettle",
        "water bottle", "bluetooth speaker", "office chair", "laptop stand", "wireless mouse",
        "keyboard", "monitor", "vacuum cleaner", "microwave", "space heater", "tent",
        "sleeping bag", "treadmill", "winter jacket", "sun hat", "wristwatch",
        "headset", "webcam", "printer", "router", "smartwatch", "frying pan", "knife set",
        "teapot", "bathrobe", "pillow", "mattress topper", "baby stroller",
        "car seat", "dog bed", "cat tree", "guitar tuner", "board game", "jigsaw puzzle",
        "drone", "tablet case",
    ],
}

# ----------------------------------------------------------------- eval pools
EVAL = {
    "frames": [
        "Greetings, {name} speaking. Regarding purchase {oid}, {issue}. {action}",
        "To whom it may concern: {issue} (order no. {oid}). {action} Sincerely, {name}",
        "Hiya! {name} again, order ref {oid}. {Issue}. {action}",
        "Reaching out as {name} about purchase no. {oid}; {issue}. {action}",
        "Support folks, {issue} and I am fed up. Order ref {oid}. {action} - {name}",
    ],
    "frames_no_order": [
        "Evening, {name} calling in. {Issue}. {action}",
        "Good afternoon, {name} here, can't find my order reference, but {issue}. {action}",
    ],
    "issue": {
        "damaged": ["the {p} got crushed in transit", "the {p} was delivered shattered"],
        "late": [
            "the {p} is overdue",
            "the {p} has been delayed for ages and is nowhere to be seen",
        ],
        "wrong_item": [
            "what came was not the {p} I ordered",
            "a totally different thing came instead of my {p}",
        ],
        "missing": ["the {p} was absent from the parcel", "the parcel came without the {p}"],
        "billing": [
            "my statement shows a double payment for the {p}",
            "there is an extra fee on my bill for the {p}",
        ],
        "defective": [
            "the {p} powers on but does nothing at all",
            "the {p} keeps malfunctioning",
        ],
    },
    "action": {
        "refund": ["Please reimburse me.", "Return the money to my card."],
        "replacement": ["Ship another unit, please.", "I'd like a fresh one sent out."],
        "cancel": ["Call off the whole order.", "Void this purchase."],
        "track": ["Tell me its current location.", "What's the shipping status?"],
        "callback": ["Ring me when you can.", "Have an agent give me a phone call."],
    },
    "first": [
        "Beatriz", "Oluwaseun", "Henrik", "Anjali", "Dmitri", "Camille", "Siobhan", "Tobias",
        "Ngozi", "Akira", "Valentina", "Emeka", "Astrid", "Farah", "Joaquin", "Svetlana",
        "Thandiwe", "Bartholomew", "Esperanza", "Kwame", "Ludmila", "Ignacio", "Marisol",
        "Yusuf", "Greta",
    ],
    "first_compound": ["Marie-Claire", "Juan Pablo", "Lars-Erik"],
    "last": [
        "Abernathy", "Castellanos", "Wojcik", "Oyelaran", "Bergstrom", "Takahashi",
        "Figueroa", "Papadopoulos", "Nakamura", "Szabo", "Delacroix", "Kaur", "Achterberg",
        "Villanueva", "Quispe", "Eriksen", "Mwangi", "Horvath",
    ],
    "last_hyphen": ["Ortiz-Vega", "Pryce-Hollis"],
    "last_particle": ["dos Santos", "ter Horst"],
    "products": [
        "waffle iron", "espresso grinder", "standing desk", "ski goggles", "sewing machine",
        "humidifier", "pressure washer", "hammock", "telescope", "food processor",
        "electric toothbrush", "trampoline", "record player", "paddle board", "slow cooker",
        "barbecue grill", "massage gun", "bike helmet", "juicer", "rowing machine",
        "air purifier", "popcorn popper",
    ],
}


def make_name(rng: random.Random, pool: dict) -> str:
    """One customer name of 1-3 words drawn from a split's pools."""
    shape = rng.random()
    if shape < 0.1:
        return rng.choice(pool["first"])
    if shape < 0.65:
        return f"{rng.choice(pool['first'])} {rng.choice(pool['last'])}"
    if shape < 0.8:
        return f"{rng.choice(pool['first_compound'])} {rng.choice(pool['last'])}"
    if shape < 0.92:
        return f"{rng.choice(pool['first'])} {rng.choice(pool['last_hyphen'])}"
    return f"{rng.choice(pool['first'])} {rng.choice(pool['last_particle'])}"


def make_order_id(rng: random.Random, taken: set[str], other: tuple[str, set[str]]) -> str:
    """A fresh 5-6 digit id; `other` = (text, ids) of the other split, which it must not touch."""
    other_text, other_ids = other
    while True:
        oid = str(rng.randint(10_000, 999_999))
        if oid not in taken and oid not in other_text and not any(o in oid for o in other_ids):
            taken.add(oid)
            return oid


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def make_split(rng: random.Random, pool: dict, n: int, other: tuple[str, set[str]]) -> list[dict]:
    """Rows for one split; issues are balanced by cycling through them before shuffling."""
    issues = [list(ACTIONS_FOR)[i % len(ACTIONS_FOR)] for i in range(n)]
    rng.shuffle(issues)
    taken: set[str] = set()
    seen_inputs: set[str] = set()
    rows = []
    for issue in issues:
        while True:
            row = make_row(rng, pool, issue, taken, other)
            if row["input"] not in seen_inputs:
                seen_inputs.add(row["input"])
                rows.append(row)
                break
    return rows


def make_row(rng, pool, issue, taken, other) -> dict:
    # Rarer actions (allowed for fewer issues) get more weight so every label is well represented.
    actions = ACTIONS_FOR[issue]
    weights = [1 / sum(a in allowed for allowed in ACTIONS_FOR.values()) for a in actions]
    action = rng.choices(actions, weights=weights)[0]
    name = make_name(rng, pool)
    product = rng.choice(pool["products"])
    has_order = rng.random() >= NO_ORDER_RATE
    oid = make_order_id(rng, taken, other) if has_order else None
    frame = rng.choice(pool["frames"] if has_order else pool["frames_no_order"])
    clause = rng.choice(pool["issue"][issue]).format(p=product)
    text = frame.format(
        name=name, oid=oid, issue=clause, Issue=cap(clause),
        action=rng.choice(pool["action"][action]),
    )
    record = dict(zip(KEYS, (name, oid, product, issue, action)))
    return {"input": text, "output": json.dumps(record, ensure_ascii=False), "category": issue}


def copy_values(rows: list[dict]) -> set[str]:
    values = set()
    for row in rows:
        record = json.loads(row["output"])
        values.update(v for k in ("name", "order_id", "product") if (v := record[k]) is not None)
    return values


def check(train: list[dict], evals: list[dict]) -> None:
    """Fail loudly if anything lets eval be solved by memorising train."""
    assert not set(TRAIN["frames"] + TRAIN["frames_no_order"]) & set(
        EVAL["frames"] + EVAL["frames_no_order"]
    ), "shared frame"
    for kind in ("issue", "action"):
        for label in TRAIN[kind]:
            assert not set(TRAIN[kind][label]) & set(EVAL[kind][label]), f"shared {kind} wording"
    train_words = {w for key in ("first", "first_compound", "last", "last_hyphen", "last_particle")
                   for v in TRAIN[key] for w in re.split(r"[ -]", v)}
    eval_words = {w for key in ("first", "first_compound", "last", "last_hyphen", "last_particle")
                  for v in EVAL[key] for w in re.split(r"[ -]", v)}
    assert not train_words & eval_words, f"shared name parts: {train_words & eval_words}"
    for a_rows, b_rows, what in ((evals, train, "eval value in train"),
                                 (train, evals, "train value in eval")):
        b_text = "\n".join(r["input"] + "\n" + r["output"] for r in b_rows)
        leaked = sorted(v for v in copy_values(a_rows) if v in b_text)
        assert not leaked, f"{what}: {leaked[:10]}"
    for row in train + evals:
        record = json.loads(row["output"])
        assert list(record) == list(KEYS)
        for key in ("name", "order_id", "product"):
            assert record[key] is None or record[key] in row["input"], (key, row)
        assert 1 <= len(record["name"].split()) <= 3 and 1 <= len(record["product"].split()) <= 2
        assert 12 <= len(row["input"].split()) <= 45, row["input"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def seen_wordings_train(evals: list[dict]) -> list[dict]:
    """The diagnostic train split: TRAIN's pools with each label's eval wordings added; copy values
    (names, products, order ids) stay disjoint from eval's."""
    pool = {**TRAIN, **{kind: {label: TRAIN[kind][label] + EVAL[kind][label] for label in TRAIN[kind]}
                        for kind in ("issue", "action")}}
    eval_text = "\n".join(r["input"] + "\n" + r["output"] for r in evals)
    eval_ids = {oid for r in evals if (oid := json.loads(r["output"])["order_id"])}
    rows = make_split(random.Random(SEED + 1), pool, N_TRAIN, other=(eval_text, eval_ids))
    train_text = "\n".join(r["input"] + "\n" + r["output"] for r in rows)
    assert not [v for v in copy_values(evals) if v in train_text], "eval value in the diagnostic train split"
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seen-wordings", type=Path, default=None,
                        help="write only the diagnostic train split (label wordings of eval included) here")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    train = make_split(rng, TRAIN, N_TRAIN, other=("", set()))
    train_text = "\n".join(r["input"] + "\n" + r["output"] for r in train)
    train_ids = {oid for r in train if (oid := json.loads(r["output"])["order_id"])}
    evals = make_split(rng, EVAL, N_EVAL, other=(train_text, train_ids))
    check(train, evals)
    if args.seen_wordings:
        write_jsonl(args.seen_wordings, seen_wordings_train(evals))
        print(f"wrote {N_TRAIN} diagnostic train rows (eval's label wordings included) to {args.seen_wordings}")
        return
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval rows to {HERE}")


if __name__ == "__main__":
    main()
