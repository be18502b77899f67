"""Side-by-side training speed: the seed's recipe written plainly with transformers Trainer + peft
versus `zerotune train`, same model (the embedded default unless --model), same data (a mix of short
and long examples), same LoRA shape, same effective batch, same number of examples seen.

    .venv/bin/python benchmarks/train_speed.py [--rows 160] [--model M]

Each side runs in its own subprocess so its peak memory (RSS, or CUDA peak) is its own. Printed per
side: real tokens/s (prompt + answer tokens, padding excluded), peak memory, final eval loss (mean
cross-entropy per answer token on the same held-out rows, computed the same way for both), model
FLOPs utilisation (FLOPs counted with torch.utils.flop_counter on the run's own steps, per second,
over the fp32/bf16 matmul peak this script measures at the model's shapes), and the ratios.
Nothing here asserts a speed: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 16, "alpha": 32, "dropout": 0.1, "targets": ["q_proj", "v_proj"]}  # the seed's adapter
BATCH = 8


def mixed_rows(n: int, seed: int = 0) -> list[dict]:
    """Support-ticket rows, a quarter of them made long by prepending earlier messages as context."""
    src = [json.loads(line) for line in (ROOT / "examples/support_en/train.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = dict(src[i % len(src)])
        if i % 4 == 3:
            context = " ".join(r["input"] for r in rng.sample(src, rng.randint(4, 12)))
            row["input"] = f"Earlier messages: {context}\nLatest message: {row['input']}"
        rows.append({"messages": [{"role": "user", "content": row["input"]},
                                  {"role": "assistant", "content": row["output"]}]})
    return rows


def matmul_peak(hidden: int, inter: int, dtype_name: str, tokens: int = 512) -> float:
    """Best-of-5 GFLOP/s of the model's two dominant matmul shapes, forward and backward-like."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(tokens, hidden, dtype=dtype)
    w = torch.randn(hidden, inter, dtype=dtype)
    g = torch.randn(tokens, inter, dtype=dtype)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ w
            g @ w.T
        took = time.perf_counter() - start
        best = max(best, 10 * 2 * 2 * tokens * hidden * inter / took / 1e9)
    return best


def _eval_loss(model, tokenizer, fmt, rows) -> float:
    """Mean CE per answer token, one example at a time (no padding, no packing): the same measure for both."""
    import torch

    from zerotune.data.tokenize import tokenize_rows

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in tokenize_rows(rows, tokenizer, fmt, 4096).examples:
            ids = torch.tensor([ex.input_ids], device=model.device)
            labels = torch.tensor([ex.labels], device=model.device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[0, 1:]
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def run_baseline(train_rows, eval_rows, model_name, out: Path) -> dict:
    """The seed's recipe, written the way a user would: Trainer + peft, padded batches."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from zerotune import hardware
    from zerotune.data.tokenize import tokenize_rows
    from zerotune.models.loading import load_model, load_tokenizer, resolve_source
    from zerotune.models.templates import resolve_format
    from zerotune.train.progress import memory_mb  # this process's own peak (VmHWM), or the CUDA peak

    device = hardware.detect_device()
    bf16 = device.bf16_fast if device.kind == "cpu" else device.bf16_supported
    source = resolve_source(model_name)
    tokenizer = load_tokenizer(source)
    fmt = resolve_format(tokenizer, "auto", model_name or source.path)
    examples = tokenize_rows(train_rows, tokenizer, fmt, 4096).examples
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    model = load_model(source)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["targets"], bias="none", task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(out / "hf"), per_device_train_batch_size=BATCH, num_train_epochs=1,
                             learning_rate=3e-5, warmup_steps=50, logging_steps=10, save_strategy="no",
                             report_to=[], bf16=bf16, use_cpu=device.kind == "cpu", dataloader_num_workers=0,
                             disable_tqdm=True, seed=0)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    batch = collator(dataset[:BATCH])
    with FlopCounterMode(display=False) as counter:
        model.train()
        model(**{k: v.to(model.device) for k, v in batch.items()}).loss.backward()
    flops_per_real_token = counter.get_total_flops() / sum(len(d["input_ids"]) for d in dataset[:BATCH])
    tokens = sum(len(e.input_ids) for e in examples)
    return {"seconds": seconds, "tokens": tokens, "memory_mb": memory_mb(), "precision": "bf16" if bf16 else
            "fp32", "flops": flops_per_real_token * tokens, "eval_loss": _eval_loss(model, tokenizer, fmt, eval_rows)}


def run_zerotune(train_rows, eval_rows, model_name, out: Path) -> dict:
    """`zerotune train` with the same adapter, batch and examples (no closing generation pass)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from zerotune.config import build_config
    from zerotune.data.packing import pack, split_rows
    from zerotune.data.tokenize import tokenize_rows
    from zerotune.models.attention import use_packed_attention
    from zerotune.models.inference import load_run
    from zerotune.train import loop
    from zerotune.train.recipe import train

    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    cfg = build_config({"model": {"name": model_name},
                        "data": {"train": str(data), "eval_fraction": 0.0,  # the same rows as the baseline:
                                 "prepare": {"slot_swap": "off", "phrasing_mix": "off"}},  # no augmentation
                        "lora": LORA, "train": {"output": str(out / "run"), "epochs": 1, "batch_size": BATCH,
                                                "lr": 3e-5, "warmup_steps": 50, "checkpoint_every_minutes": None,
                                                "seed": 0}})
    result = train(cfg, progress=False)
    steps = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    loaded = load_run(out / "run")
    examples = tokenize_rows(train_rows, loaded.tokenizer, loaded.fmt, 4096).examples
    row = pack(split_rows(examples[:BATCH], 10**6)[0])
    use_packed_attention(loaded.model)  # as in training
    for name, p in loaded.model.named_parameters():
        p.requires_grad_("lora_" in name)  # loaded for inference; count the training backward
    with FlopCounterMode(display=False) as counter:
        loaded.model.train()
        loop.row_loss(loaded.model, row, torch.device(loaded.model.device)).backward()
    tokens = sum(s["tokens"] for s in steps)
    return {"seconds": result.seconds,  # wall time of the loop incl. logging and the final save
            "tokens": tokens, "memory_mb": max(s["memory_mb"] for s in steps),
            "precision": "see run", "flops": counter.get_total_flops() / row.n_tokens * tokens,
            "eval_loss": _eval_loss(loaded.model, loaded.tokenizer, loaded.fmt, eval_rows)}


def _child(role: str, rows: int, model: str | None, result: Path) -> None:
    all_rows = mixed_rows(rows + 40)
    train_rows, eval_rows = all_rows[:rows], all_rows[rows:]
    with tempfile.TemporaryDirectory() as tmp:
        fn = run_baseline if role == "baseline" else run_zerotune
        result.write_text(json.dumps(fn(train_rows, eval_rows, model, Path(tmp))))


def _spawn(role: str, args) -> dict:
    saved = args.save / f"{role}-{args.rows}.json" if args.save else None
    if saved and role not in args.sides.split(","):
        return json.loads(saved.read_text())  # measured earlier with the same rows
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = Path(f.name)
    cmd = [sys.executable, __file__, "--child", role, "--rows", str(args.rows), "--result", str(path)]
    if args.model:
        cmd += ["--model", args.model]
    subprocess.run(cmd, check=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    if saved:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(path.read_text())
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--model", default=None)
    parser.add_argument("--save", type=Path, default=None, help="keep each side's figures in this folder")
    parser.add_argument("--sides", default="baseline,zerotune",
                        help="sides to run; the others are read from --save (measured earlier, same rows)")
    parser.add_argument("--child", choices=["baseline", "zerotune"])
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rows, args.model, args.result)
        return
    import torch

    from zerotune import hardware
    from zerotune.models.loading import resolve_source

    device = hardware.detect_device()
    config = hardware.load_model_config(resolve_source(args.model).path)
    precision = hardware.choose_precision(device, "auto")
    peak = matmul_peak(config["hidden_size"], config["intermediate_size"],
                       "bfloat16" if precision == "bf16" else "float32")
    print(f"machine: {device.name}, {device.cores} cores, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__}; matmul peak at the model's shapes: {peak:.0f} GFLOP/s ({precision})")
    results = {role: _spawn(role, args) for role in ("baseline", "zerotune")}
    # measured again on the now quiet machine: a neighbour at the start must not inflate the MFU
    peak = max(peak, matmul_peak(config["hidden_size"], config["intermediate_size"],
                                 "bfloat16" if precision == "bf16" else "float32"))
    print(f"matmul peak (best of before and after): {peak:.0f} GFLOP/s")
    print(f"\n{'':<22}{'baseline':>14}{'zerotune':>14}{'ratio':>10}")
    rows = [("tokens/s", lambda r: r["tokens"] / r["seconds"], "{:>14.1f}"),
            ("peak memory MB", lambda r: r["memory_mb"], "{:>14.0f}"),
            ("final eval loss", lambda r: r["eval_loss"], "{:>14.4f}"),
            ("MFU (of measured peak)", lambda r: r["flops"] / r["seconds"] / 1e9 / peak, "{:>14.1%}"),
            ("train seconds", lambda r: r["seconds"], "{:>14.1f}")]
    for name, get, fmt in rows:
        a, b = get(results["baseline"]), get(results["zerotune"])
        print(f"{name:<22}" + fmt.format(a) + fmt.format(b) + f"{b / a:>10.2f}")
    print(f"\n({args.rows} rows, {results['baseline']['tokens']} real tokens, 1 epoch, batch {BATCH}, "
          f"LoRA r16 q_proj/v_proj; baseline precision {results['baseline']['precision']})")


if __name__ == "__main__":
    main()
