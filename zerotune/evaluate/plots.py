"""The evaluation report's charts, rendered to PNG bytes so the HTML report can embed them.

Figures are built on matplotlib's object API (Figure + Agg canvas) instead of pyplot: pyplot keeps
global figure state, which leaks memory in a long-lived server and is not thread-safe.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_metrics_jsonl(path: Path | None) -> list[dict]:
    """The training log rows that carry a step, skipping lines a crashed run left half-written.

    Args:
        path: RUN_DIR/metrics.jsonl, or None.
    Returns:
        The rows as dicts, in file order; [] when the file is absent.
    """
    if path is None or not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def loss_curve_png(rows: Sequence[dict]) -> bytes | None:
    """Training loss by step, with eval loss on the same axes when the log has it.

    Args:
        rows: metrics.jsonl rows (see read_metrics_jsonl).
    Returns:
        PNG bytes, or None when no row has a loss.
    """
    steps, loss = _series(rows, "loss")
    eval_steps, eval_loss = _series(rows, "eval_loss")
    if not loss and not eval_loss:
        return None
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    if loss:
        ax.plot(steps, loss, label="train loss", linewidth=1.2)
    if eval_loss:
        ax.plot(eval_steps, eval_loss, label="eval loss", marker="o", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def metrics_bar_png(results: dict[str, dict], keys: Sequence[str]) -> bytes | None:
    """Grouped bars of the 0..1 metrics, one group per metric, one bar per model (base, tuned).

    Args:
        results: {"tuned": {...}, "base": {...} (optional)}.
        keys: metric names to draw, in order; ones no model has are skipped.
    Returns:
        PNG bytes, or None when there is nothing to draw.
    """
    models = [m for m in ("base", "tuned") if m in results]
    keys = [k for k in keys if any(isinstance(results[m].get(k), (int, float)) for m in models)]
    if not keys:
        return None
    fig = Figure(figsize=(max(5, 1.1 * len(keys)), 3.5))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        values = [float(results[model].get(k) or 0.0) for k in keys]
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, values, width=width, label=model)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylim(0, max(1.0, *(float(results[m].get(k) or 0) for m in models for k in keys)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(models), frameon=False)
    return _png(fig)
