"""`evaluate()`: generate answers for a test set with the tuned model (and the base model beside it),
score them, measure speed and robustness, and write RUN_DIR/eval/."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from zerotune.config import Config, EvalConfig, GenerateConfig, dump_config
from zerotune.data.formats import read_examples
from zerotune.data.tokenize import with_system
from zerotune.evaluate.fields import field_scores
from zerotune.evaluate.metrics import score_all
from zerotune.evaluate.report import thresholds_check, write_report
from zerotune.evaluate.robustness import perturb_all, robustness_ratio
from zerotune.models.generate import generate_batch
from zerotune.models.inference import Loaded, constraint_for

HEADLINE = "exact_match_normalized"  # the score robustness compares: clean vs perturbed inputs


@dataclass
class Pass:
    """Predictions of one model on one input set, with timing."""

    predictions: list[str]
    new_tokens: int
    seconds: float
    latencies: list[float]


def split_rows(rows: list[dict], system_prompt: str | None) -> tuple[list[list[dict]], list[str]]:
    """(prompt conversations, reference answers): each row's last assistant message is its reference."""
    prompts, refs = [], []
    for row in rows:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(with_system(messages[:last], system_prompt))
        refs.append(messages[last]["content"])
    return prompts, refs


def answer_budget(loaded: Loaded, refs: list[str], cap: int) -> int:
    """New-token budget: twice the longest reference (+16), at most `cap`. An answer longer than that
    cannot match and scores no better on BLEU/chrF by going on; a chatty base model would otherwise
    spend most of the evaluation writing past it."""
    longest = max((len(loaded.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs), default=0)
    return max(1, min(cap, 2 * longest + 16))


def run_pass(loaded: Loaded, prompts: list[list[dict]], ecfg: EvalConfig, gcfg: GenerateConfig,
             desc: str, progress: bool = True, max_new_tokens: int | None = None) -> Pass:
    """Generate answers batch by batch; latency is the wall time a caller of each batch waited."""
    from tqdm import tqdm

    preds: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -sum(len(m["content"]) for m in prompts[i]))
    tokens, latencies, total = 0, [], 0.0
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress, leave=False)
    for k in range(0, len(order), ecfg.batch_size):
        chunk = order[k:k + ecfg.batch_size]
        start = time.perf_counter()
        gens = generate_batch(loaded.model, loaded.tokenizer, loaded.fmt, [prompts[i] for i in chunk],
                              max_new_tokens=max_new_tokens or ecfg.max_new_tokens, temperature=gcfg.temperature,
                              top_p=gcfg.top_p, constraint=constraint_for(loaded, gcfg.constrain))
        took = time.perf_counter() - start
        for i, gen in zip(chunk, gens):
            preds[i] = gen.text
            tokens += gen.new_tokens
        latencies.extend([took] * len(chunk))
        total += took
        bar.update(len(chunk))
    bar.close()
    return Pass(preds, tokens, total, latencies)


def _perturbed(prompts: list[list[dict]], seed: int) -> list[list[dict]]:
    users = [next(i for i in range(len(p) - 1, -1, -1) if p[i]["role"] == "user") for p in prompts]
    noisy = perturb_all([p[u]["content"] for p, u in zip(prompts, users)], seed)
    out = []
    for p, u, text in zip(prompts, users, noisy):
        q = [dict(m) for m in p]
        q[u]["content"] = text
        out.append(q)
    return out


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def score_model(loaded: Loaded, prompts, refs, ecfg: EvalConfig, gcfg: GenerateConfig, label: str,
                robustness: bool, progress: bool) -> tuple[dict, list[str]]:
    """All metrics of one model: quality on clean inputs, speed, and (optionally) robustness."""
    budget = answer_budget(loaded, refs, ecfg.max_new_tokens)
    clean = run_pass(loaded, prompts, ecfg, gcfg, f"eval {label}", progress, budget)
    metrics = score_all(clean.predictions, refs)
    metrics["decoding"] = "schema" if constraint_for(loaded, gcfg.constrain) else "free"
    metrics["tokens_per_second"] = clean.new_tokens / max(clean.seconds, 1e-9)
    metrics["latency_p50_s"] = _percentile(clean.latencies, 50)
    metrics["latency_p95_s"] = _percentile(clean.latencies, 95)
    if robustness:
        noisy = run_pass(loaded, _perturbed(prompts, ecfg.robustness_seed), ecfg, gcfg, f"perturbed {label}",
                         progress, budget)
        metrics["perturbed_score"] = score_all(noisy.predictions, refs)[HEADLINE]
        metrics["robustness"] = robustness_ratio(metrics[HEADLINE], metrics["perturbed_score"])
    return metrics, clean.predictions


def evaluate_loaded(loaded: Loaded, rows: list[dict], cfg: Config, *, out_dir: Path | None,
                    compare_base: bool = False, robustness: bool = True, progress: bool = True) -> dict:
    """Score a loaded model on canonical rows and (when out_dir is set) write out_dir/eval/.

    Args:
        loaded: from zerotune.models.inference.load_target.
        rows: canonical {"messages": ...} rows; the last assistant message is the reference.
        cfg: config (eval thresholds, generation settings).
        out_dir: where eval/ goes (a run directory, or any folder); None writes nothing.
        compare_base: also score the base model (the run's adapter switched off).
        robustness: also score perturbed inputs.
        progress: progress bars.
    Returns:
        {"tuned": metrics, "base": metrics (when compared), "passed": {threshold: bool}, "fields":
        {"tuned": per-field scores, "base": ... (when compared)} (structured answers only; see
        zerotune.evaluate.fields.field_scores)}.
    """
    prompts, refs = split_rows(rows, loaded.system_prompt)
    results: dict = {}
    tuned, preds = score_model(loaded, prompts, refs, cfg.eval, cfg.generate, "tuned", robustness, progress)
    results["tuned"] = tuned
    base_preds = None
    if compare_base:
        if not loaded.adapter:
            raise ValueError("--compare-base needs a run directory with an adapter (the base is the adapter off)")
        with loaded.model.disable_adapter():
            results["base"], base_preds = score_model(loaded, prompts, refs, cfg.eval, cfg.generate, "base",
                                                      robustness, progress)
    questions = [p[-1]["content"] for p in prompts]
    schema = getattr(loaded, "schema", None)
    kinds = {f.name: "copy" if f.copy else "label" for f in schema.fields} if schema else None
    by_field = {"tuned": field_scores(questions, preds, refs, kinds)}
    if base_preds is not None:
        by_field["base"] = field_scores(questions, base_preds, refs, kinds)
    if by_field["tuned"] is not None:
        results["fields"] = by_field
    thresholds = {"exact_match": cfg.eval.exact_match, "bleu4": cfg.eval.bleu4, "robustness": cfg.eval.robustness}
    results["passed"] = thresholds_check(tuned, thresholds, base=results.get("base"))
    if out_dir is not None:
        _write(out_dir, results, prompts, refs, preds, base_preds, cfg, thresholds)
    return results


def _write(out_dir: Path, results, prompts, refs, preds, base_preds, cfg: Config, thresholds) -> None:
    eval_dir = out_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (p, r, y) in enumerate(zip(prompts, refs, preds)):
        s = {"input": p[-1]["content"], "expected": r, "prediction": y, "exact": y.strip() == r.strip()}
        if base_preds is not None:
            s["base_prediction"] = base_preds[i]
        samples.append(s)
    with open(eval_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    metrics = {**results["tuned"], **({"base": results["base"]} if "base" in results else {}),
               "passed": results["passed"], **({"fields": results["fields"]} if "fields" in results else {})}
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    metrics_jsonl = out_dir / "metrics.jsonl"
    config_yaml = (out_dir / "config.yaml").read_text(encoding="utf-8") if (out_dir / "config.yaml").is_file() \
        else dump_config(cfg)
    write_report(out_dir, {k: v for k, v in results.items() if k in ("tuned", "base")}, samples=samples,
                 thresholds=thresholds, metrics_jsonl=metrics_jsonl if metrics_jsonl.is_file() else None,
                 config_yaml=config_yaml, worst_n=cfg.eval.worst_n, fields=results.get("fields"))


def load_rows(path: str, fmt: str = "auto", limit: int | None = None) -> list[dict]:
    """Test rows from a file (any format prepare reads)."""
    rows = read_examples(path, fmt=fmt)
    return rows[:limit] if limit else rows

