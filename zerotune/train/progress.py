"""What a run tells the user and writes beside its weights: the progress bar (loss, tokens/s, ETA),
metrics.jsonl (one object per logged step) and loss.png."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch


def memory_mb() -> float:
    """Peak memory so far: GPU allocator peak on CUDA, else the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    try:  # VmHWM is this process's own peak; ru_maxrss carries a parent's peak across fork+exec
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plot_loss(metrics_path: Path, out: Path) -> None:
    """Draw training (and eval) loss against step from a metrics.jsonl file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows if "loss" in r], [r["loss"] for r in rows if "loss" in r], label="train")
    ev = [r for r in rows if "eval_loss" in r]
    if ev:
        ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="eval")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per answer token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


class RunLog:
    """Progress bar plus metrics.jsonl for one run."""

    def __init__(self, run_dir: Path, total_steps: int, *, progress: bool = True, start_step: int = 0):
        from tqdm import tqdm

        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.started = time.perf_counter()
        self.last_loss = float("nan")
        self.tokens = 0
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress,
                        dynamic_ncols=True, file=sys.stderr)

    def header(self, model: str, device, precision: str, template: str, n_train: int, n_eval: int,
               too_long: int, total_steps: int) -> None:
        """Say what is about to happen, in one block."""
        lines = [f"model     {model}", f"device    {device.name} ({device.kind}, {device.capability}), precision {precision}",
                 f"template  {template}", f"data      {n_train} train / {n_eval} eval examples"
                 + (f", {too_long} over the length budget dropped" if too_long else ""),
                 f"steps     {total_steps}", f"run dir   {self.run_dir}"]
        print("\n".join(lines), file=sys.stderr)

    def step(self, record: dict) -> None:
        """Log one optimizer step."""
        record["memory_mb"] = round(memory_mb(), 1)
        record["elapsed_s"] = round(time.perf_counter() - self.started, 2)  # since this process started the run
        self.last_loss = record["loss"]
        self.tokens += record["tokens"]
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        post = {"loss": f"{record['loss']:.4f}", "tok/s": f"{rate:.0f}"}
        if "eval_loss" in record:
            post["eval"] = f"{record['eval_loss']:.4f}"
        self.bar.set_postfix(post)
        self.bar.update(1)

    def finish(self, eval_loss: float | None) -> float:
        """Close the bar, record the final eval loss, draw loss.png; returns wall seconds."""
        self.bar.close()
        seconds = time.perf_counter() - self.started
        if eval_loss is not None and self.metrics_path.is_file():
            rows = self.metrics_path.read_text(encoding="utf-8").splitlines()
            last = json.loads(rows[-1])
            last["eval_loss"] = eval_loss
            rows[-1] = json.dumps(last)
            self.metrics_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        if self.metrics_path.is_file():
            plot_loss(self.metrics_path, self.run_dir / "loss.png")
        return seconds
