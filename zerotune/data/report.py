"""The 3C quality report of prepare: report.json (everything), report.md (for people), report.png.

Consistency (formats and schema problems), coverage (categories, length distributions, copy slots) and
cleanliness (duplicates, PII, cleaning, rejects), with row counts before and after every step so
each input row is accounted for.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from zerotune.data.slots import COPY_RATE, SPAN

# row tag, config/report key
SLOT_KINDS = (("slot_swap", "slot_swap"), ("template_mix", "phrasing_mix"), ("clause_order", "clause_order"),
              ("synonym_swap", "synonym_swap"))
OPT_IN = {"clause_order"}  # off unless asked: reported only when on


def shown_kinds(slots: dict) -> list[tuple[str, str]]:
    """The SLOT_KINDS a report names: every kind, except an opt-in one that is off."""
    return [(tag, key) for tag, key in SLOT_KINDS if slots[key]["on"] or key not in OPT_IN]


def length_histogram(lengths: Sequence[int]) -> dict:
    """Summary and power-of-two-binned histogram of lengths in characters (lengths are skewed)."""
    arr = np.asarray(lengths, dtype=np.int64)
    if arr.size == 0:
        return {"unit": "characters", "n": 0, "edges": [], "counts": []}
    top = max(int(arr.max()), 16)
    edges = [0] + [2 ** k for k in range(4, int(np.ceil(np.log2(top + 1))) + 1)]
    if edges[-1] <= top:
        edges.append(edges[-1] * 2)
    counts, _ = np.histogram(arr, bins=edges)
    return {"unit": "characters", "n": int(arr.size), "min": int(arr.min()), "median": float(np.median(arr)),
            "p95": float(np.percentile(arr, 95)), "max": int(arr.max()), "edges": edges, "counts": counts.tolist()}


def _table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _hist_lines(name: str, hist: dict) -> list[str]:
    if not hist["n"]:
        return [f"{name}: no rows"]
    head = f"{name} ({hist['unit']}): min {hist['min']}, median {hist['median']:.0f}, " \
           f"p95 {hist['p95']:.0f}, max {hist['max']}"
    bins = [(f"{lo}-{hi - 1}", n) for lo, hi, n in zip(hist["edges"], hist["edges"][1:], hist["counts"]) if n]
    return [head, "", *_table(("length", "rows"), bins)]


def _summary_md(r: dict) -> list[str]:
    s = r["summary"]
    lines = ["# Data preparation report", "",
             f"{s['rows_in']} input rows -> {s['train']} train + {s['eval']} eval "
             f"({s['augmented']} of the train rows augmented), {s['rejected']} left out.", "",
             "## What happened to every row", ""]
    steps = [(x["step"], x["before"], x["after"], f"{x['after'] - x['before']:+d}".replace("+0", "0"),
              x.get("note", "")) for x in r["steps"]]
    lines += _table(("step", "rows before", "rows after", "change", "note"), steps)
    if r["cleanliness"]["rejects_file"]:
        lines += ["", f"Every left-out row is in `{r['cleanliness']['rejects_file']}` with its file, line, "
                      "stage and reason."]
    return lines


def _consistency_md(c: dict) -> list[str]:
    lines = ["", "## Consistency", "", "Formats: " + (", ".join(f"{k} {v}" for k, v in c["formats"].items()) or "none")]
    if c["mixed_files"]:
        lines.append("Files mixing formats: " + ", ".join(c["mixed_files"]))
    if c["problems"]:
        lines += ["", *_table(("schema problem", "rows"), sorted(c["problems"].items(), key=lambda kv: -kv[1]))]
        lines += ["", "First problems:", "", *(f"- `{p}`" for p in c["problem_examples"])]
    else:
        lines.append("No schema problems.")
    return lines


def _coverage_md(c: dict) -> list[str]:
    lines = ["", "## Coverage", ""]
    if c["categories"]:
        rows = [(i, x["name"], x["train"], x["eval"], x["augmented"], f"{x['share']:.1%}")
                for i, x in enumerate(c["categories"], 1)]
        lines += _table(("#", "category", "train", "eval", "of which augmented", "share"), rows)
    else:
        lines.append(f"No category field ({c['category_field']}); the split is not stratified.")
    if c["uncovered"]:
        lines += ["", "Expected categories with no rows: " + ", ".join(c["uncovered"])]
    if c["not_in_eval"]:
        lines += ["", "Categories with no eval rows (too few rows): " + ", ".join(c["not_in_eval"])]
    lines += ["", *_hist_lines("Input length", c["input_length"]), "",
              *_hist_lines("Output length", c["output_length"])]
    return lines


def _cleanliness_md(c: dict) -> list[str]:
    pii = c["pii"]
    lines = ["", "## Cleanliness", "",
             f"- exact duplicates removed: {c['exact_duplicates']}",
             f"- near duplicates removed: {c['near_duplicates']} ({c['near_dedup']})",
             f"- PII ({pii['action']}): {pii['rows']} rows with hits"
             + (": " + ", ".join(f"{k} {v}" for k, v in pii["hits"].items()) if pii["hits"] else ""),
             f"- rows truncated to the token budget: {c['truncated']}"]
    if c["cleaning"]:
        rows = [(k, v["texts_changed"], v["chars_removed"]) for k, v in c["cleaning"].items()]
        lines += ["", *_table(("cleaning rule", "texts changed", "characters removed"), rows)]
    if c["rejects"]:
        lines += ["", *_table(("left out at", "rows"), list(c["rejects"].items()))]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _slot_note(name: str, entry: dict) -> str:
    if entry["memorise_risk"]:
        return "memorise risk: few distinct values"
    if entry["copy_field"]:
        return ""
    if name == SPAN:
        return "free-text spans: reported, not augmented"
    if entry["copy_rate"] < COPY_RATE:
        return f"a label: copied in only {entry['copy_rate']:.0%} of its rows"
    return "too few rows to count"


def _slots_md(slots: dict | None) -> list[str]:
    if not slots:
        return []
    cov = slots["coverage"]
    lines = ["", "### Copy slots", "",
             f"{cov['rows_with_slots']} of {cov['rows']} train rows copy values from their input into the answer."]
    if not cov["slots"]:
        return lines
    rows = [(_cell(name), e["kind"], e["rows"], f"{e['copy_rate']:.0%}", e["distinct"],
             _cell(", ".join(f"{v} x{c}" for v, c in e["top"][:3])),
             "" if e["eval_unseen"] is None else f"{e['eval_unseen']:.0%} of {e['eval_rows']}", _slot_note(name, e))
            for name, e in cov["slots"].items()]
    return lines + ["", *_table(("slot", "kind", "rows", "copied", "distinct", "top values",
                                 "eval values unseen in train", "note"), rows)]


def _augmentation_md(report: dict) -> list[str]:
    aug, slots, why, skipped = report.get("augmentation") or {}, report.get("slots"), {}, {}
    for kind, key in shown_kinds(slots) if slots else []:
        part = slots[key]
        why[kind] = part["why"] + (f"; slots: {', '.join(part['slots'])}" if part["on"] and part["slots"] else "")
        skipped[kind] = part["skipped"]
    why.update({"back_translation": "a translator was given", "template": "a template spec was given"})
    kinds = [k for k in why if k in aug or k in skipped]
    if not kinds:
        return []
    rows = [(k, aug.get(k, {}).get("generated", 0), aug.get(k, {}).get("added", 0), _cell(why[k])) for k in kinds]
    lines = ["", "## Augmentation (train only)", "", *_table(("kind", "generated", "added", "why"), rows)]
    lines += [f"- {kind} not made: " + ", ".join(f"{n} {r}" for r, n in reasons.items())
              for kind, reasons in skipped.items() if reasons]
    return lines


def schema_entry(schema, why: str) -> dict:
    """The report's record of the answer schema (data/schema.py) train will write and eval/serve keep to."""
    if schema is None:
        return {"found": False, "why": why}
    fields = [{"name": f.name, "copy": f.copy, "labels": list(f.labels)} for f in schema.fields]
    return {"found": True, "kind": schema.kind, "fields": fields, "rows": schema.rows, "skipped": schema.skipped}


def _schema_md(entry: dict | None) -> list[str]:
    if not entry:
        return []
    lines = ["", "### Answer schema", ""]
    if not entry["found"]:
        return lines + [f"None ({entry['why']}): answers are decoded freely."]
    lines.append(f"The train answers share one {entry['kind']} structure ({entry['rows'] - entry['skipped']} of "
                 f"{entry['rows']} rows); a run trained on them keeps every answer to it while decoding (eval, "
                 "generate, chat, serve; `generate.constrain=off` turns that off).")
    rows = [(_cell(f["name"]), "span of the question" + (" or a label" if f["labels"] else "") if f["copy"]
             else "label", _cell(", ".join(f["labels"])[:120])) for f in entry["fields"]]
    return lines + ["", *_table(("field", "value", "labels"), rows)]


def slot_summary(report: dict) -> list[str]:
    """Two short lines on copy slots and the augmentation they drove (for the CLI)."""
    slots = report.get("slots")
    if not slots or not slots["copy_fields"]:
        return ["copy slots: none found"]
    cov = slots["coverage"]["slots"]
    found = ", ".join(f"{n} ({cov[n]['kind']}, {cov[n]['distinct']} distinct"
                      + (", memorise risk)" if cov[n]["memorise_risk"] else ")") for n in slots["copy_fields"])
    aug = report.get("augmentation", {})
    made = "; ".join(f"{key} +{aug.get(tag, {}).get('added', 0)} rows" if slots[key]["on"]
                     else f"{key} off ({slots[key]['why']})" for tag, key in shown_kinds(slots))
    schema = report.get("schema") or {}
    shape = [f"answer schema: {schema['kind']}, fields " + ", ".join(
        f["name"] + ("" if f["copy"] else f" ({len(f['labels'])} labels)") for f in schema["fields"])] \
        if schema.get("found") else []
    return [f"copy slots: {found}", f"augmentation: {made}"] + shape


def slot_warnings(slots: dict | None) -> list[str]:
    """A warning per copy slot whose values repeat so much that a model may memorise them."""
    if not slots:
        return []
    out = []
    for name, e in slots["coverage"]["slots"].items():
        if not e["memorise_risk"]:
            continue
        help_ = ("slot swap adds fresh values" if name in slots["slot_swap"]["slots"] else
                 "phrasing mix recombines them" if name in slots["phrasing_mix"]["slots"] else
                 "more varied values, or prepare.slot_swap=on, would help")
        out.append(f"copy slot {name!r}: {e['distinct']} distinct values in {e['rows']} train rows (most common "
                   f"{e['top'][0][0]!r} x{e['top'][0][1]}); a model may memorise them instead of copying; {help_}")
    return out


def render_markdown(report: dict) -> str:
    """report.md text from the report dict."""
    lines = _summary_md(report) + _consistency_md(report["consistency"]) + _coverage_md(report["coverage"])
    lines += _slots_md(report.get("slots")) + _schema_md(report.get("schema")) + _augmentation_md(report)
    lines += _cleanliness_md(report["cleanliness"])
    if report["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in report["warnings"])]
    lines += ["", "![charts](report.png)", ""]
    return "\n".join(lines)


def _bar_hist(ax, hist: dict, title: str) -> None:
    ax.set_title(title)
    if hist["n"]:
        labels = [str(lo) for lo in hist["edges"][:-1]]
        ax.bar(range(len(labels)), hist["counts"], tick_label=labels)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.set_xlabel("characters (bin start)")


def plot(report: dict, path: str | Path) -> None:
    """report.png: rows per step, category split, and input/output length histograms."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and notebooks' workers
    import matplotlib.pyplot as plt

    # Category names are often Chinese: use a CJK font when the machine has one, and do not warn
    # about every missing glyph when it has none.
    fonts = ["Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "DejaVu Sans"]
    with plt.rc_context({"font.sans-serif": fonts}), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _draw(plt, report, path, _has_cjk_font(fonts[:-1]))


def _has_cjk_font(names: list[str]) -> bool:
    from matplotlib import font_manager

    try:
        font_manager.findfont(font_manager.FontProperties(family=names), fallback_to_default=False)
        return True
    except ValueError:
        return False


def _label(name: str, index: int, cjk: bool) -> str:
    """A category's axis label; without a CJK font, its number in report.md's table instead of boxes."""
    return name if cjk or name.isascii() else f"#{index}"


def _draw(plt, report: dict, path: str | Path, cjk: bool) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    steps = [{"step": "input", "after": report["summary"]["rows_in"]}, *report["steps"]]
    axes[0, 0].barh([s["step"] for s in steps][::-1], [s["after"] for s in steps][::-1])
    axes[0, 0].set_title("rows after each step")
    cats = report["coverage"]["categories"]
    names = [_label(c["name"], i, cjk) for i, c in enumerate(cats, 1)] or ["(all)"]
    train = [c["train"] for c in cats] or [report["summary"]["train"]]
    evals = [c["eval"] for c in cats] or [report["summary"]["eval"]]
    axes[0, 1].bar(names, train, label="train")
    axes[0, 1].bar(names, evals, bottom=train, label="eval")
    axes[0, 1].set_title("rows per category")
    axes[0, 1].legend()
    axes[0, 1].tick_params(axis="x", labelrotation=30)
    _bar_hist(axes[1, 0], report["coverage"]["input_length"], "input length")
    _bar_hist(axes[1, 1], report["coverage"]["output_length"], "output length")
    # Fixed margins: tight_layout would draw the whole figure an extra time to measure it.
    fig.subplots_adjust(left=0.16, right=0.98, top=0.95, bottom=0.1, hspace=0.45, wspace=0.25)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: str | Path, report: dict) -> None:
    """Write report.json, report.md and report.png into a directory."""
    out = Path(out_dir)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    plot(report, out / "report.png")


def _step_table(run, cfg, near_note: str, n_train: int, n_eval: int, extra: list[dict], made: int,
                dropped: dict) -> list[dict]:
    stages, steps, after = run.rejects.by_stage, [], run.rows_in

    def step(name: str, removed: int, note: str = "") -> None:
        nonlocal after
        steps.append({"step": name, "before": after, "after": after - removed, "note": note})
        after -= removed

    step("read + validate", stages["invalid"], f"{run.problem_total} invalid rows" if run.problem_total else "")
    step("clean", stages["empty_after_cleaning"], f"{sum(run.cleaner.changed.values())} texts changed")
    step(f"PII ({cfg.pii})", stages["pii"], f"{run.rows_with_pii} rows with hits" if cfg.pii != "off" else "off")
    step("exact dedup", stages["duplicate"], "off" if cfg.dedup == "none" else "")
    step("token budget", stages["too_long"],
         "skipped: no tokenizer or budget given" if run.budget is None else f"{run.truncated} truncated")
    step("near dedup", stages["near_duplicate"], near_note)
    step("split", 0, f"{n_train} train / {n_eval} eval")
    why = ", ".join(f"{v} {k}" for k, v in dropped.items())
    kinds = Counter(r.get("augmented", "template") for r in extra)
    by_kind = f" ({', '.join(f'{n} {k}' for k, n in kinds.items())})" if kinds else ""
    steps.append({"step": "augment (train only)", "before": after, "after": after + len(extra),
                  "note": f"{made} generated, {len(extra)} added{by_kind}" + (f"; left out: {why}" if why else "")})
    return steps


def _categories(run, keep: np.ndarray, is_eval: np.ndarray, extra: list[dict]) -> list[dict]:
    names = list(run.categories)
    if not names and not any("category" in r for r in extra):
        return []
    aug = Counter(r.get("category", "(none)") for r in extra)
    names += [n for n in aug if n not in run.categories and n != "(none)"]
    cat = np.frombuffer(run.category, dtype=np.int32) + 1  # 0 = no category
    train = np.bincount(cat[keep & ~is_eval], minlength=len(names) + 1)
    evals = np.bincount(cat[is_eval], minlength=len(names) + 1)
    rows = []
    for i, name in enumerate(["(none)", *names]):
        t = int(train[i]) if i < len(train) else 0
        t, e = t + aug[name], int(evals[i]) if i < len(evals) else 0
        if t or e:
            rows.append({"name": name, "train": t, "eval": e, "augmented": aug[name]})
    total = sum(r["train"] + r["eval"] for r in rows) or 1
    for r in rows:
        r["share"] = (r["train"] + r["eval"]) / total
    return rows


def _augmentation(extra: list[dict], made_by: dict | None) -> dict:
    added = Counter(r.get("augmented", "template") for r in extra)
    return {k: {"generated": (made_by or {}).get(k, added[k]), "added": added[k]}
            for k in sorted(set(made_by or {}) | set(added))}


def build_report(run, cfg, *, keep: np.ndarray, is_eval: np.ndarray, extra: list[dict], made: int,
                 dropped: dict, near_note: str, seed: int, eval_fraction: float, made_by: dict | None = None,
                 slots: dict | None = None) -> dict:
    """The report dict from the streaming pass (a StreamPass) and the steps after it.

    made_by counts generated rows per augmentation kind; slots is augment_for_training's report (copy-slot
    coverage of the train rows and why each slot augmentation ran or not).
    """
    n_eval = int(is_eval.sum())
    n_train = int(keep.sum()) - n_eval
    cats = _categories(run, keep, is_eval, extra)
    present = {c["name"] for c in cats}
    extra_in = [sum(len(m["content"]) for m in r["messages"] if m["role"] != "assistant") for r in extra]
    extra_out = [sum(len(m["content"]) for m in r["messages"] if m["role"] == "assistant") for r in extra]
    in_len = np.concatenate([np.frombuffer(run.in_len, dtype=np.uint32)[keep], extra_in])
    out_len = np.concatenate([np.frombuffer(run.out_len, dtype=np.uint32)[keep], extra_out])
    formats = Counter()
    for f in run.files:
        formats.update(f["formats"])
    return {
        "summary": {"rows_in": run.rows_in, "train": n_train + len(extra), "eval": n_eval, "augmented": len(extra),
                    "rejected": sum(run.rejects.by_stage.values())},
        "steps": _step_table(run, cfg, near_note, n_train, n_eval, extra, made, dropped),
        "consistency": {"formats": dict(formats), "problems": dict(run.problem_kinds),
                        "mixed_files": [f["path"] for f in run.files if len(f["formats"]) > 1 or f["mixed_rows"]],
                        "problem_examples": [str(p) for p in run.problems[:10]]},
        "coverage": {"category_field": cfg.category_field or "category", "categories": cats,
                     "uncovered": [c for c in cfg.categories if c not in present],
                     "not_in_eval": [c["name"] for c in cats if eval_fraction > 0 and c["eval"] == 0],
                     "input_length": length_histogram(in_len), "output_length": length_histogram(out_len)},
        "cleanliness": {"exact_duplicates": run.rejects.by_stage["duplicate"],
                        "near_duplicates": run.rejects.by_stage["near_duplicate"], "near_dedup": near_note,
                        "pii": {"action": cfg.pii, "rows": run.rows_with_pii, "hits": dict(run.pii_hits)},
                        "truncated": run.truncated, "cleaning": run.cleaner.summary(),
                        "rejects": dict(run.rejects.by_stage),
                        "rejects_file": "rejects.jsonl" if run.rejects.by_stage else None},
        "slots": slots, "augmentation": _augmentation(extra, made_by),
        "inputs": run.files, "warnings": list(run.warnings) + slot_warnings(slots),
        "settings": {"seed": seed, "eval_fraction": eval_fraction, "processes": run.workers,
                     "prepare": cfg.model_dump(mode="json")},
    }
