"""The evaluation report: RUN_DIR/eval/report.md for reading in a terminal or a repo, and a
self-contained eval/report.html (plots embedded as base64 PNG) that can be mailed or attached.

Both show the same things: tuned vs base metrics against the thresholds, the training loss
curve, the metrics chart, the worst samples with a word/character diff, and the run's config.
"""

from __future__ import annotations

import base64
import difflib
import html
import re
from collections.abc import Sequence
from pathlib import Path

from zerotune.evaluate.fields import field_lines
from zerotune.evaluate.metrics import CJK_RANGES, SCORE_KEYS, sentence_chrf
from zerotune.evaluate.plots import loss_curve_png, metrics_bar_png, read_metrics_jsonl

# Diffs run on words for spaced scripts and on characters for CJK; whitespace is kept as tokens
# so that joining the tokens gives the text back exactly.
_DIFF_TOKEN_RE = re.compile(f"\\s+|[{CJK_RANGES}]|(?:(?![{CJK_RANGES}])\\w)+|[^\\w\\s]")
_RATIO_KEYS = tuple(k for k in SCORE_KEYS if k != "n") + ("robustness",)
_ROW_ORDER = _RATIO_KEYS + ("perturbed_score", "tokens_per_second", "latency_p50_s", "latency_p95_s", "n")
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37;font-weight:bold}
.fail{color:#cf222e;font-weight:bold}pre{background:#f6f8fa;padding:8px;white-space:pre-wrap}
del{background:#ffd7d5;text-decoration:line-through}ins{background:#ccffd8;text-decoration:none}
.sample{border-top:1px solid #ddd;padding:0.5em 0}"""


def thresholds_check(metrics: dict, thresholds: dict, *, base: dict | None = None) -> dict[str, bool]:
    """Which thresholds the tuned model meets (each is met at >= the bar).

    exact_match, bleu4 and any other plain metric: metrics[name] >= thresholds[name].

    robustness is relative. With a base model measured (base carries "perturbed_score"), the
    tuned model must score at least thresholds["robustness"] x the base model's score on the same
    perturbed inputs: "robust" means "no more fragile than what we started from", which a ratio
    alone cannot say when the base model already collapses on clean inputs. Without a base, the
    tuned model's own ratio perturbed/clean (metrics["robustness"]) must reach the threshold.

    Args:
        metrics: the tuned model's metrics ("robustness" = perturbed/clean ratio of the headline
            score, "perturbed_score" = that score on perturbed inputs).
        thresholds: {"exact_match": 0.85, "bleu4": 0.32, "robustness": 0.8}, say.
        base: the base model's metrics, when it was evaluated too.
    Returns:
        {threshold name: met?}; thresholds whose metric was not measured are left out.
    """
    checks = {}
    for name, bar in thresholds.items():
        if bar is None:
            continue
        if name == "robustness" and base and _number(base.get("perturbed_score")) and _number(
                metrics.get("perturbed_score")):
            checks[name] = metrics["perturbed_score"] >= bar * base["perturbed_score"]
        elif _number(metrics.get(name)):
            checks[name] = metrics[name] >= bar
    return checks


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(key: str, value: object) -> str:
    if isinstance(value, str):
        return value  # decoding: schema or free
    if not _number(value):
        return "–"
    if key == "n" or isinstance(value, int):
        return str(value)
    if key == "tokens_per_second":
        return f"{value:.1f}"
    if key.startswith("latency"):
        return f"{value:.3f}"
    return f"{value:.4f}"


def _bar_text(bar: float, relative: bool) -> str:
    return f"≥ {bar:.2f} × base perturbed" if relative else f"≥ {bar:.2f}"


def metric_rows(results: dict, thresholds: dict) -> list[list[str]]:
    """The metric table: [metric, (base,) tuned, threshold, verdict] per metric, as display text.

    Args:
        results: {"tuned": {...}, "base": {...} (optional)}.
        thresholds: bars by metric name.
    Returns:
        One list of cells per metric, known metrics first, then any extra keys sorted.
    """
    tuned, base = results["tuned"], results.get("base")
    checks = thresholds_check(tuned, thresholds, base=base)
    relative = base is not None and _number(base.get("perturbed_score"))
    keys = [k for k in _ROW_ORDER if k in tuned or (base and k in base)]
    keys += sorted(k for k in tuned if k not in _ROW_ORDER)
    rows = []
    for key in keys:
        bar = thresholds.get(key)
        cells = [key] + ([_fmt(key, base.get(key))] if base is not None else []) + [_fmt(key, tuned.get(key))]
        cells.append(_bar_text(bar, relative and key == "robustness") if bar is not None else "")
        cells.append("" if key not in checks else ("PASS" if checks[key] else "FAIL"))
        rows.append(cells)
    return rows


def worst_samples(samples: Sequence[dict], n: int) -> list[tuple[dict, float]]:
    """The n samples that went most wrong: not exact, lowest sentence chrF first.

    Args:
        samples: {"input", "expected", "prediction", "exact", ...} dicts.
        n: how many to keep.
    Returns:
        (sample, chrF in 0..1) pairs, worst first; exact samples are never listed.
    """
    wrong = [s for s in samples if not s.get("exact", s["prediction"].strip() == s["expected"].strip())]
    scores = sentence_chrf([s["prediction"] for s in wrong], [s["expected"] for s in wrong])
    ranked = sorted(zip(wrong, scores), key=lambda pair: pair[1])
    return ranked[:max(n, 0)]


def _opcodes(expected: str, produced: str) -> list[tuple[str, str, str]]:
    a, b = _DIFF_TOKEN_RE.findall(expected), _DIFF_TOKEN_RE.findall(produced)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(tag, "".join(a[i1:i2]), "".join(b[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def diff_html(expected: str, produced: str) -> str:
    """Expected vs produced as HTML: <del> what the model missed, <ins> what it added (escaped).

    Args:
        expected: the reference text.
        produced: the model's text.
    Returns:
        An HTML fragment safe to embed.
    """
    parts = []
    for tag, old, new in _opcodes(expected, produced):
        if tag == "equal":
            parts.append(html.escape(old))
            continue
        if old:
            parts.append(f"<del>{html.escape(old)}</del>")
        if new:
            parts.append(f"<ins>{html.escape(new)}</ins>")
    return "".join(parts)


def diff_text(expected: str, produced: str) -> str:
    """Expected vs produced in wdiff notation: [-missed-]{+added+}, for the Markdown report."""
    parts = []
    for tag, old, new in _opcodes(expected, produced):
        if tag == "equal":
            parts.append(old)
            continue
        parts.append((f"[-{old}-]" if old else "") + (f"{{+{new}+}}" if new else ""))
    return "".join(parts)


def _fence(text: str, lang: str = "") -> str:
    # A fence longer than any backtick run inside keeps model output from closing the block.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _verdict_line(rows: list[list[str]]) -> str:
    verdicts = [r[-1] for r in rows if r[-1]]
    if not verdicts:
        return "No thresholds checked."
    passed = verdicts.count("PASS")
    overall = "PASS" if passed == len(verdicts) else "FAIL"
    return f"Thresholds: {overall} ({passed}/{len(verdicts)} met)"


def _header(results: dict) -> list[str]:
    return ["metric"] + (["base"] if "base" in results else []) + ["tuned", "threshold", "result"]


_FIELD_HEAD = ["field", "kind", "accuracy", "wrong", "commonest wrong answers (expected -> written)"]


def _field_tables(fields: dict | None) -> list[tuple[str, list[list[str]], list[str]]]:
    """(title, table rows, per-value lines of label fields) for the tuned model and the base one."""
    out = []
    for who in ("tuned", "base"):
        scores = (fields or {}).get(who)
        if scores:
            values = [f"{name}: " + ", ".join(f"{v} {r}/{n}" for v, (r, n) in s["values"].items())
                      for name, s in scores.items() if s["kind"] == "label"]
            out.append((f"Fields, {who} model", field_lines(scores), values))
    return out


def _markdown(results, rows, worst, config_yaml, images, fields=None) -> str:
    head = _header(results)
    out = ["# zerotune evaluation report", "", _verdict_line(rows), "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    for title, table, values in _field_tables(fields):
        out += ["", f"## {title}", "", "| " + " | ".join(_FIELD_HEAD) + " |", "|" + "---|" * len(_FIELD_HEAD)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table]
        if values:
            out += ["", "Right answers per label value:", ""] + [f"- {line}" for line in values]
    for title, name in images:
        out += ["", f"## {title}", "", f"![{title}]({name})"]
    out += ["", f"## Worst {len(worst)} samples", ""]
    for i, (s, score) in enumerate(worst, 1):
        out += [f"### {i}. chrF {score:.3f}", "", "Input:", _fence(s["input"]), "", "Expected:",
                _fence(s["expected"]), "", "Produced:", _fence(s["prediction"]), "",
                "Diff ([-missing-]{+added+}):", _fence(diff_text(s["expected"], s["prediction"]))]
        if "base_prediction" in s:
            out += ["", "Base model:", _fence(s["base_prediction"])]
        out.append("")
    if config_yaml:
        out += ["## Config", "", _fence(config_yaml.rstrip("\n"), "yaml")]
    return "\n".join(out) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        css = {"PASS": ' class="pass"', "FAIL": ' class="fail"'}.get(text, "")
        return f"<td{css}>{html.escape(text)}</td>"

    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows]
    return "\n".join(lines + ["</table>"])


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _html_sample(i: int, s: dict, score: float) -> str:
    parts = [f'<div class="sample"><h3>{i}. chrF {score:.3f}</h3>', "<b>Input</b>", _pre(s["input"]),
             "<b>Expected</b>", _pre(s["expected"]), "<b>Produced</b>", _pre(s["prediction"]),
             "<b>Diff</b> (<del>missing</del> <ins>added</ins>)",
             f"<pre>{diff_html(s['expected'], s['prediction'])}</pre>"]
    if "base_prediction" in s:
        parts += ["<b>Base model</b>", _pre(s["base_prediction"])]
    return "\n".join(parts + ["</div>"])


def _html(results, rows, worst, config_yaml, pngs, fields=None) -> str:
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>zerotune evaluation report</title>',
           f"<style>{_CSS}</style></head><body>", "<h1>zerotune evaluation report</h1>",
           f"<p><b>{html.escape(_verdict_line(rows))}</b></p>", _html_table(_header(results), rows)]
    for title, table, values in _field_tables(fields):
        out += [f"<h2>{html.escape(title)}</h2>", _html_table(_FIELD_HEAD, table)]
        if values:
            out += ["<p>Right answers per label value:</p>", "<ul>"]
            out += [f"<li>{html.escape(line)}</li>" for line in values] + ["</ul>"]
    for title, png in pngs:
        data = base64.b64encode(png).decode("ascii")
        out += [f"<h2>{html.escape(title)}</h2>", f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">']
    out.append(f"<h2>Worst {len(worst)} samples</h2>")
    out += [_html_sample(i, s, score) for i, (s, score) in enumerate(worst, 1)]
    if config_yaml:
        out += ["<h2>Config</h2>", f"<pre>{html.escape(config_yaml)}</pre>"]
    return "\n".join(out + ["</body></html>"]) + "\n"


def write_report(out_dir: Path, results: dict, *, samples: list[dict], thresholds: dict,
                 metrics_jsonl: Path | None, config_yaml: str | None, worst_n: int = 10,
                 fields: dict | None = None) -> None:
    """Write OUT_DIR/eval/report.md, OUT_DIR/eval/report.html and the charts beside them.

    Args:
        out_dir: the run directory (or --out folder); the files go into its eval/ subfolder.
        results: {"tuned": {metric: value}, "base": {...} (optional)}; see thresholds_check for
            the robustness keys.
        samples: {"input", "expected", "prediction", "base_prediction" (optional), "exact"} dicts.
        thresholds: bars by metric name, e.g. {"exact_match": 0.85, "bleu4": 0.32, "robustness": 0.8}.
        metrics_jsonl: the training log for the loss curve; None or missing skips the curve.
        config_yaml: the run's resolved config text; None leaves the section out.
        worst_n: how many failed samples to show.
        fields: {"tuned": field_scores(...), "base": ...} for structured answers; None leaves the
            per-field tables out.
    """
    eval_dir = Path(out_dir) / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    rows = metric_rows(results, thresholds)
    worst = worst_samples(samples, worst_n)
    charts = [("Training loss", "loss_curve.png", loss_curve_png(read_metrics_jsonl(metrics_jsonl))),
              ("Metrics: base vs tuned" if "base" in results else "Metrics", "metrics.png",
               metrics_bar_png(results, _RATIO_KEYS))]
    charts = [c for c in charts if c[2] is not None]
    for _, name, png in charts:
        (eval_dir / name).write_bytes(png)
    images = [(title, name) for title, name, _ in charts]
    (eval_dir / "report.md").write_text(_markdown(results, rows, worst, config_yaml, images, fields), encoding="utf-8")
    pngs = [(title, png) for title, _, png in charts]
    (eval_dir / "report.html").write_text(_html(results, rows, worst, config_yaml, pngs, fields), encoding="utf-8")
