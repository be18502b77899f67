"""Two processes through `accelerate launch` (DDP over gloo on the CPU) train the way one process does
with the same global batch, and a run stopped in two processes resumes in two processes.

`accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up, so the
processes come from the shipped configs/accelerate/ddp.yaml: torchrun starts them, and without a GPU
accelerate joins them over gloo.
"""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny import ROWS, save_tiny
from zerotune.cli import main

pytestmark = pytest.mark.slow
DDP = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp.yaml"
STEPS = 10


def _args(base, root, run) -> list[str]:
    # 13 rows in steps of 4: one step of each epoch has a single example, so a process gets no work
    # there; 64-token rows put each process's two examples in two micro-batches (no_sync, then sync)
    return ["train", "--model", str(base), "--data", str(root / "train.jsonl"), "--eval-data", str(root / "eval.jsonl"),
            "-o", str(run), "--max-steps", str(STEPS), "--no-compare", "train.batch_size=4", "train.batch_tokens=64",
            "train.lr=1e-2", "lora.dropout=0", "train.eval_every_steps=3", "train.checkpoint_every_steps=3",
            "train.keep_checkpoints=5"]


def _launch(args: list[str]) -> list[str]:
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(DDP), "--num_processes",
            "2", "--main_process_port", str(port), "-m", "zerotune", *args]


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(run, reference):
    got, want = _metrics(run), _metrics(reference)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for key in ("loss", "eval_loss", "tokens", "target_tokens"):
        assert [r["step"] for r in got if key in r] == [r["step"] for r in want if key in r], key
        assert [r[key] for r in got if key in r] == pytest.approx([r[key] for r in want if key in r], rel=1e-4), key
    a = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    base = save_tiny("llama", root / "base")
    lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    (root / "train.jsonl").write_text(lines(ROWS * 3 + ROWS[:1]))
    (root / "eval.jsonl").write_text(lines(ROWS[1:]))  # 3 rows: the processes score 2 and 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each of the two processes
    try:
        assert main(_args(base, root, root / "single")) == 0
    finally:
        torch.set_num_threads(threads)
    return base, root, root / "single"


def test_two_processes_train_like_one(setup):
    base, root, single = setup
    run = root / "two"
    done = subprocess.run(_launch(_args(base, root, run)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes 2" in done.stderr
    _assert_same_training(run, single)


def test_stopped_in_two_processes_resumes_in_two(setup):
    base, root, single = setup
    run = root / "stopped"
    proc = subprocess.Popen(_launch(_args(base, root, run)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = run / "metrics.jsonl", time.time() + 240
    while (not metrics.is_file() or len(metrics.read_text().splitlines()) < 4) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
    _, err = proc.communicate(timeout=120)
    assert "checkpoint saved" in err, err[-3000:]
    saved = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
    stopped_at = int(saved[-1].name[5:])
    assert 4 <= stopped_at < STEPS and len(_metrics(run)) == stopped_at
    assert (saved[-1] / "rng-rank1.pt").is_file()  # each process gets its own RNG back
    done = subprocess.run(_launch(_args(base, root, run)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from step-{stopped_at}" in done.stderr
    _assert_same_training(run, single)
