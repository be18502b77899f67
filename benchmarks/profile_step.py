"""Where a zerotune training step spends its time, and how close to the matmul peak it can get.

    .venv/bin/python benchmarks/profile_step.py [--dropout 0.1] [--targets q_proj,v_proj] [--model M]

Same model, rows and adapter as `benchmarks/train_speed.py` (the embedded default, the mixed short and
long support tickets, LoRA r16 on q_proj/v_proj with the seed's dropout 0.1; --dropout/--targets change
it), one packed row of 8 examples a step, forward and backward as `zerotune train` runs them
(padding-free, logits only at answer tokens, attention per packed example). It prints:
- measured: real tokens/s over 4 steps, the FLOPs `torch.utils.flop_counter` counts for them per
  second, the matmul peak measured at the model's shapes (best of several sizes) and their ratio (MFU);
- the share of step time per kind of operator (torch.profiler, self time over 2 steps): matrix
  multiplies, attention kernels, dropout's random masks, everything else (element-wise, copies);
- two ceilings read off that split: the MFU if everything but the matmuls and the attention took no
  time at all, and if the attention did not either.
Nothing here asserts a number; it measures and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_speed import BATCH, LORA, matmul_peak, mixed_rows  # noqa: E402

KINDS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
         "attention": ("scaled_dot_product",), "dropout masks": ("aten::bernoulli",)}


def kind_of(op: str) -> str:
    return next((kind for kind, names in KINDS.items() if any(n in op for n in names)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dropout", type=float, default=LORA["dropout"])
    parser.add_argument("--targets", default=",".join(LORA["targets"]), help="comma list, or all-linear")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from zerotune import hardware
    from zerotune.config import build_config
    from zerotune.data.packing import pack, split_rows
    from zerotune.data.tokenize import tokenize_rows
    from zerotune.models.attention import use_packed_attention
    from zerotune.models.loading import load_model, load_tokenizer, resolve_source
    from zerotune.models.templates import resolve_format
    from zerotune.train.loss import row_loss
    from zerotune.train.recipe import attach_adapter

    source = resolve_source(args.model)
    tokenizer = load_tokenizer(source)
    fmt = resolve_format(tokenizer, "auto", args.model or source.path)
    examples = tokenize_rows(mixed_rows(160), tokenizer, fmt, 4096).examples
    targets = args.targets if args.targets == "all-linear" else args.targets.split(",")
    cfg = build_config({"model": {"name": args.model},
                        "lora": {**LORA, "dropout": args.dropout, "targets": targets}})
    model = attach_adapter(load_model(source), cfg)
    use_packed_attention(model)
    model.train()
    device = torch.device(model.device)
    rows = [pack(split_rows(examples[i:i + BATCH], 10**6)[0]) for i in range(0, 8 * BATCH, BATCH)]

    def step(row) -> None:
        row_loss(model, row, device).backward()

    with FlopCounterMode(display=False) as counter:
        step(rows[0])
    flops_per_token = counter.get_total_flops() / rows[0].n_tokens
    for row in rows[:2]:  # warm-up
        step(row)
    start, tokens = time.perf_counter(), 0
    for row in rows[2:6]:
        step(row)
        tokens += row.n_tokens
    seconds = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for row in rows[6:8]:
            step(row)
    config = hardware.load_model_config(source.path)
    dtype = next(p for p in model.parameters()).dtype
    peak = max(matmul_peak(config["hidden_size"], config["intermediate_size"], str(dtype).split(".")[1], n)
               for n in (512, 1024, 2048) for _ in range(2))

    shares: dict[str, float] = {}
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    for e in events:
        shares[kind_of(e.key)] = shares.get(kind_of(e.key), 0.0) + e.self_cpu_time_total / total
    rate = flops_per_token * tokens / seconds / 1e9
    mfu = rate / peak
    print(f"machine: {hardware.detect_device().name}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; LoRA r{LORA['r']} {args.targets}, "
          f"dropout {args.dropout}, {dtype}")
    print(f"measured: {tokens / seconds:.1f} real tokens/s, {rate:.1f} GFLOP/s counted, matmul peak {peak:.0f} "
          f"GFLOP/s -> MFU {mfu:.1%}")
    print("share of step time (profiler self time):")
    for kind in (*KINDS, "other"):
        print(f"  {kind:<15}{shares.get(kind, 0.0):7.1%}")
    others = sorted((e for e in events if kind_of(e.key) == "other"), key=lambda e: -e.self_cpu_time_total)
    print("largest 'other' operators: " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.1%}" for e in others[:6]))
    kept = shares.get("matmul", 0.0) + shares.get("attention", 0.0)
    print(f"ceiling if nothing but matmuls and attention took time: MFU {mfu / kept:.1%}")
    print(f"ceiling if only the matmuls took time (attention free): MFU {mfu / shares.get('matmul', 1.0):.1%}")


if __name__ == "__main__":
    main()
