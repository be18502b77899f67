"""Quality by default: the seed's recipe, a plain well-set LoRA and zerotune's defaults on the example
tasks, whose eval rows use phrasings and values that training never shows.

    .venv/bin/python benchmarks/quality.py                       # both tasks, all three recipes
    .venv/bin/python benchmarks/quality.py --tasks en --recipes defaults --eval-rows 100
    .venv/bin/python benchmarks/quality.py --tasks en-seen --recipes defaults   # diagnostic, see SEEN_WORDINGS

Recipes (all on the embedded SmolLM2-135M unless --model, same data, seed 0):
    seed      the article's: LoRA r16/alpha32/dropout 0.1 on q_proj+v_proj, lr 3e-5 linear, warmup 50,
              batch 8, 3 epochs, no augmentation
    plain     a well-set LoRA: r16 on all linear layers, lr 4e-4 cosine, 4 epochs, no augmentation
    defaults  `zerotune train --data train.jsonl --eval-data eval.jsonl` with nothing set (slot swap /
              phrasing mix as data.prepare decides for the data)

Each run is its own process (its peak memory is its own). Printed and written (markdown, --out): exact
match, JSON/field match, BLEU-4 on the eval rows (decoded as `zerotune eval` does: kept to the answer
schema of the training data where it has one), exact match decoded freely, training wall time, steps and peak memory. Nothing here
asserts a number; it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"en": ROOT / "examples/support_en", "zh": ROOT / "examples/clinic_zh"}
# Diagnostic tasks: train rows whose label wordings (English issue/action; Chinese severity and history
# cues) include eval's, frames and copy values still unseen, scored on the same eval rows; what they gain
# over "en"/"zh" is what the unseen label wordings cost.
SEEN_WORDINGS = {"en-seen": "en", "zh-seen": "zh"}
NO_AUGMENT = {"slot_swap": "off", "phrasing_mix": "off"}
RECIPES = {
    "seed": {"lora": {"r": 16, "alpha": 32, "dropout": 0.1, "targets": ["q_proj", "v_proj"]},
             "train": {"lr": 3e-5, "scheduler": "linear", "warmup_steps": 50, "epochs": 3},
             "data": {"prepare": NO_AUGMENT}},
    "plain": {"lora": {"r": 16, "alpha": 32, "targets": "all-linear"},
              "train": {"lr": 4e-4, "scheduler": "cosine", "epochs": 4},
              "data": {"prepare": NO_AUGMENT}},
    "defaults": {},
}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def curve(out: Path, rows: list[dict], steps: list[dict]) -> list[dict]:
    """Exact match of every checkpoint the run kept, against the wall time of training at its step."""
    from safetensors.torch import load_file

    from zerotune.evaluate.run import evaluate_loaded
    from zerotune.models.inference import load_run, read_run_config
    from zerotune.train.checkpoint import list_checkpoints

    loaded, cfg = load_run(out), read_run_config(out)
    elapsed = {s["step"]: s["elapsed_s"] for s in steps}
    points = []
    for ckpt in reversed(list_checkpoints(out / "checkpoints")):
        step = int(ckpt.name.split("-")[1])
        missing = loaded.model.load_state_dict(load_file(str(ckpt / "trainable.safetensors")), strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys[:3]
        scores = evaluate_loaded(loaded, rows, cfg, out_dir=None, robustness=False, progress=False)["tuned"]
        points.append({"step": step, "elapsed_s": elapsed.get(step), "exact_match": scores["exact_match"]})
        print(f"  step {step:>4}  {elapsed.get(step, 0):7.0f} s  EM {scores['exact_match']:.3f}", flush=True)
    return points


def task_files(task: str, out: Path) -> tuple[Path, Path]:
    """(train, eval) files of a task; a diagnostic task's train file is generated next to the run."""
    if task in TASKS:
        return TASKS[task] / "train.jsonl", TASKS[task] / "eval.jsonl"
    folder = TASKS[SEEN_WORDINGS[task]]
    train_file = out.with_name(f"{out.name}-train.jsonl")
    train_file.parent.mkdir(parents=True, exist_ok=True)  # --keep DIR may not exist yet
    subprocess.run([sys.executable, str(folder / "generate.py"), "--seen-wordings", str(train_file)], check=True)
    return train_file, folder / "eval.jsonl"


def run_one(task: str, recipe: str, eval_rows: int, model: str | None, out: Path, extra: dict,
            curve_every: int = 0) -> dict:
    """Train one recipe on one task and score it on the task's eval rows (and, with curve_every, every
    curve_every steps: the time-to-quality curve)."""
    from zerotune import evaluate, train
    from zerotune.config import build_config, update
    from zerotune.models.inference import read_run_config
    from zerotune.evaluate.run import load_rows

    train_file, eval_file = task_files(task, out)
    base = {"model": {"name": model}, "data": {"train": str(train_file), "eval": str(eval_file)},
            "train": {"output": str(out), "checkpoint_every_minutes": None, "seed": 0}}
    if curve_every:
        base["train"].update(checkpoint_every_steps=curve_every, keep_checkpoints=10_000)
    cfg = build_config(_merge(_merge(base, RECIPES[recipe]), extra))
    result = train(cfg, progress=False, compare=False, restart=True)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "step" in s and "tokens" in s]
    rows = sum(1 for _ in (out / "data" / "train.jsonl").open())
    start = time.perf_counter()
    scores = evaluate(str(out), str(eval_file), robustness=False, limit=eval_rows or None,
                      progress=False)["tuned"]
    free = evaluate(str(out), str(eval_file), robustness=False, limit=eval_rows or None, progress=False,
                    out=str(out / "free"), cfg=update(read_run_config(out), generate={"constrain": "off"}))["tuned"]
    points = curve(out, load_rows(str(eval_file), limit=eval_rows or None), steps) if curve_every else []
    return {"task": task, "recipe": recipe, "curve": points, "train_rows": rows, "steps": result["steps"],
            "train_seconds": result["seconds"], "memory_mb": max((s.get("memory_mb", 0) for s in steps), default=0),
            "tokens_per_second": sum(s["tokens"] for s in steps) / max(result["seconds"], 1e-9),
            "eval_seconds": time.perf_counter() - start, "eval_loss": result["eval_loss"],
            "decoding": scores["decoding"], "exact_match_free": free["exact_match"],
            **{k: scores[k] for k in ("exact_match", "json_match", "field_match", "bleu4", "n")}}


def _spawn(task: str, recipe: str, args, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="zerotune-quality-") as tmp:
        out = (keep / f"{task}-{recipe}") if keep else Path(tmp) / "run"
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", f"{task}:{recipe}", "--eval-rows", str(args.eval_rows),
               "--result", str(result), "--run-dir", str(out), "--set", json.dumps(args.set),
               "--curve-every", str(args.curve_every)]
        if args.model:
            cmd += ["--model", args.model]
        subprocess.run(cmd, check=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        return json.loads(result.read_text())


def table(results: list[dict], machine: str) -> str:
    """The markdown table the README shows."""
    lines = [f"Machine: {machine}", "",
             "| task | recipe | train rows | steps | train time | tokens/s | peak RSS | exact match | JSON/field match "
             "| BLEU-4 | exact match, free decoding | eval rows |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        structured = r["json_match"] if r["task"].startswith("en") else r["field_match"]
        lines.append(f"| {r['task']} | {r['recipe']} | {r['train_rows']} | {r['steps']} | "
                     f"{r['train_seconds'] / 60:.1f} min | {r['tokens_per_second']:.0f} | {r['memory_mb'] / 1024:.1f} GB | "
                     f"{r['exact_match']:.2f} | {structured:.2f} | {r['bleu4']:.3f} | {r['exact_match_free']:.2f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="en,zh", help="en, zh, or the diagnostic en-seen / zh-seen")
    parser.add_argument("--recipes", default="seed,plain,defaults")
    parser.add_argument("--eval-rows", type=int, default=100, help="first N eval rows (0 = all)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--set", type=json.loads, default={}, help='JSON config overrides for every run, e.g. '
                        '\'{"train": {"epochs": 2}}\'')
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories under this folder")
    parser.add_argument("--out", type=Path, default=None, help="also append the markdown table to this file")
    parser.add_argument("--curve-every", type=int, default=0,
                        help="also score a checkpoint every N steps: exact match against training wall time")
    parser.add_argument("--child")
    parser.add_argument("--result", type=Path)
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        task, recipe = args.child.split(":")
        args.result.write_text(json.dumps(run_one(task, recipe, args.eval_rows, args.model, args.run_dir, args.set,
                                                   args.curve_every)))
        return
    import torch

    from zerotune import hardware

    device = hardware.detect_device()
    machine = (f"{device.name}, {device.cores} cores, capability {torch.backends.cpu.get_cpu_capability()}, "
               f"torch {torch.__version__}" + (f"; overrides {json.dumps(args.set)}" if args.set else ""))
    print(machine, flush=True)
    results = []
    for task in args.tasks.split(","):
        for recipe in args.recipes.split(","):
            r = _spawn(task, recipe, args, args.keep)
            results.append(r)
            print(f"{task:<3} {recipe:<9} EM {r['exact_match']:.3f} ({r['decoding']}; free {r['exact_match_free']:.3f})  json {r['json_match']:.3f}  field "
                  f"{r['field_match']:.3f}  BLEU-4 {r['bleu4']:.3f}  train {r['train_seconds']:.0f} s "
                  f"({r['steps']} steps, {r['train_rows']} rows)  peak {r['memory_mb']:.0f} MB", flush=True)
    text = table(results, machine)
    for r in results:
        if r["curve"]:
            reached = next((p for p in r["curve"] if p["exact_match"] >= 0.9), None)
            text += (f"\n{r['task']} {r['recipe']}: exact match by training time: "
                     + ", ".join(f"{p['elapsed_s'] / 60:.1f} min {p['exact_match']:.2f}" for p in r["curve"])
                     + (f"; time to 0.9: {reached['elapsed_s'] / 60:.1f} min" if reached else
                        "; never reached 0.9 in this run") + "\n")
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
