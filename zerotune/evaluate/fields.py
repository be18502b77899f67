"""Per-field scores of structured answers (JSON objects or `key:value;...` records): which field a
tuned model gets wrong, and what it wrote instead.

Exact match says how many answers are right; this says where the rest go wrong. On the English
example task the misses of a 0.73 run were almost all two label fields, and 18 of 27 came from two
wordings the training rows never used ("overdue" answered `missing`): a table by field and by label
value shows that at a glance, where the worst-samples list shows ten rows.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Sequence

from zerotune.data.slots import answer_pairs, occurrences, structure

TOP = 5  # confusions listed per field


def _scalar(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_leaves(obj, path: str = ""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _json_leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _json_leaves(value, f"{path}[{i}]")
    else:
        yield path, _scalar(obj)


def record(answer: str) -> dict[str, str] | None:
    """field -> value of a JSON or key:value answer (null, numbers and booleans as JSON writes them;
    nested keys joined with dots); None for free text or broken structure."""
    kind, parsed = structure(answer)
    if kind == "json":
        return dict(_json_leaves(parsed))
    if kind == "kv":
        return dict(answer_pairs(answer))
    return None


def field_scores(questions: Sequence[str], preds: Sequence[str], refs: Sequence[str],
                 kinds: dict[str, str] | None = None) -> dict | None:
    """Accuracy of each field of the references, and the commonest wrong answers.

    Args:
        questions: the last user message of each row (decides whether a field is copied or a label).
        preds, refs: the model's answers and the expected ones.
        kinds: field -> "copy" or "label" as the run's answer schema says; a field it does not name is
            a copy when at least half of its expected values (null aside) stand in the question.
    Returns:
        None when any reference is free text; else {field: {"kind": "copy" | "label", "rows": n,
        "accuracy": share right, "wrong": n, "confusions": [[expected, written, count], ...] (commonest
        first, at most 5; written is null when the answer lacks the field or is not structured),
        "values": {value: [right, rows]} (label fields only)}}, fields in the references' order.
    """
    records = [record(r) for r in refs]
    if not records or any(r is None for r in records):
        return None
    names = list(dict.fromkeys(name for r in records for name in r))
    got = [record(p) or {} for p in preds]
    out = {}
    for name in names:
        right, rows, copied, valued = 0, 0, 0, 0
        confusions, values = Counter(), defaultdict(lambda: [0, 0])
        for question, expected, answer in zip(questions, records, got):
            if name not in expected:
                continue
            want, wrote = expected[name], answer.get(name)
            rows += 1
            ok = wrote == want
            right += ok
            values[want][0] += ok
            values[want][1] += 1
            if want not in ("null", ""):
                valued += 1
                copied += bool(occurrences(question, want))
            if not ok:
                confusions[(want, wrote)] += 1
        kind = (kinds or {}).get(name) or ("copy" if valued and copied * 2 >= valued else "label")
        entry = {"kind": kind, "rows": rows, "accuracy": right / rows, "wrong": rows - right,
                 "confusions": [[want, wrote, n] for (want, wrote), n in confusions.most_common(TOP)]}
        if kind == "label":
            entry["values"] = {v: values[v] for v in sorted(values)}
        out[name] = entry
    return out


def confusion_text(confusions: list) -> str:
    """"late -> missing x6, ..." for [[expected, written, count], ...] ("(none)" where nothing was written)."""
    return ", ".join(f"{want} -> {wrote if wrote is not None else '(none)'} x{n}" for want, wrote, n in confusions)


def field_lines(scores: dict) -> list[list[str]]:
    """Table rows (field, kind, accuracy, wrong/rows, commonest wrong answers) for a report."""
    return [[name, s["kind"], f"{s['accuracy']:.3f}", f"{s['wrong']}/{s['rows']}",
             confusion_text(s["confusions"]) or "-"] for name, s in scores.items()]
