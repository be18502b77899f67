"""Which eval wordings a tuned model gets wrong: the misses of an example task's eval, counted per label
wording of the task's generator (English issue/action; Chinese severity and history clauses).

    .venv/bin/python benchmarks/wordings.py RUN_DIR/eval/samples.jsonl            # support_en
    .venv/bin/python benchmarks/wordings.py RUN_DIR/eval/samples.jsonl --task zh  # clinic_zh

samples.jsonl is what `zerotune eval` writes (input, expected, prediction per row). Each row's wording
is found by matching the generator's eval pools against the input; a field counts as wrong when the
prediction's value differs from the expected one (an unparseable prediction is wrong in every field).
Prints, per wording: wrong/total and what the model answered instead. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from zerotune.evaluate.fields import record

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"en": ROOT / "examples/support_en/generate.py", "zh": ROOT / "examples/clinic_zh/generate.py"}


def generator(task: str):
    """The example task's generate.py as a module (its TRAIN/EVAL pools)."""
    spec = importlib.util.spec_from_file_location(f"generate_{task}", TASKS[task])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pattern(template: str, slot: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{" + slot + "}"), ".+?"), re.IGNORECASE)


def wording_patterns(task: str) -> list[tuple[str, str, str, re.Pattern]]:
    """(field, label, wording, pattern) for every label wording of the task's eval pools."""
    gen = generator(task)
    out = []
    if task == "en":
        for kind in ("issue", "action"):
            for label, wordings in gen.EVAL[kind].items():
                out += [(kind, label, w, _pattern(w, "p")) for w in wordings]
    else:
        for label, wordings in gen.EVAL["severity"].items():
            out += [("程度", label, w, re.compile(re.escape(w))) for w in wordings]
        out += [("既往史", "(copied)", w, _pattern(w, "h")) for w in gen.EVAL["history"]]
        out += [("既往史", "无", w, re.compile(re.escape(w))) for w in gen.EVAL["no_history"]]
    return out


def tally(samples: list[dict], task: str) -> list[tuple[str, str, str, int, int, Counter]]:
    """(field, label, wording, wrong, total, answers given instead) per wording, in pool order."""
    patterns = wording_patterns(task)
    total, wrong, instead = Counter(), Counter(), defaultdict(Counter)
    for row in samples:
        expected, predicted = record(row["expected"]) or {}, record(row["prediction"]) or {}
        for field in dict.fromkeys(p[0] for p in patterns):
            hits = [p for p in patterns if p[0] == field and p[3].search(row["input"])]
            key = hits[0][:3] if hits else (field, "?", "(no eval wording found)")
            total[key] += 1
            if predicted.get(field) != expected.get(field):
                wrong[key] += 1
                instead[key][str(predicted.get(field))] += 1
    order = {p[:3]: i for i, p in enumerate(patterns)}
    keys = sorted(total, key=lambda k: order.get(k, len(order)))
    return [(*key, wrong[key], total[key], instead[key]) for key in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", type=Path, help="RUN_DIR/eval/samples.jsonl from zerotune eval")
    parser.add_argument("--task", choices=sorted(TASKS), default="en")
    args = parser.parse_args()
    samples = [json.loads(line) for line in args.samples.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = tally(samples, args.task)
    print("| field | label | eval wording | wrong | answered instead |")
    print("|---|---|---|---:|---|")
    for field, label, wording, bad, n, given in rows:
        others = ", ".join(f"{v} {c}" for v, c in given.most_common())
        print(f"| {field} | {label} | {wording} | {bad}/{n} | {others} |")
    bad_rows = sum(1 for s in samples if record(s["prediction"]) != record(s["expected"]))
    print(f"\n{len(samples)} rows, {bad_rows} with a wrong field", file=sys.stderr)


if __name__ == "__main__":
    main()
