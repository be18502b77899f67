"""Kill training hard (SIGKILL) at several points, re-run the same command, and get the same adapter
as a run that was never interrupted; SIGTERM stops cleanly with a checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tiny import ROWS, save_tiny

pytestmark = pytest.mark.slow


def _command(base, data, run):
    return [sys.executable, "-m", "zerotune", "train", "--model", str(base), "--data", str(data), "-o", str(run),
            "--max-steps", "24", "--no-compare", "train.batch_size=2", "train.checkpoint_every_steps=5",
            "train.lr=1e-2", "data.eval_fraction=0", "lora.dropout=0.1", "train.keep_checkpoints=2"]


def _steps_logged(run):
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _run_until(cmd, run, steps, sig):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _steps_logged(run) < steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    base = save_tiny("llama", root / "base")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS * 6))
    reference = root / "reference"
    done = subprocess.run(_command(base, data, reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return base, data, reference


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_at_several_points_then_resume_is_exact(setup, tmp_path):
    base, data, reference = setup
    run = tmp_path / "run"
    killed_at = []
    for steps in (3, 8, 17):  # between checkpoints, not on them
        code, _ = _run_until(_command(base, data, run), run, steps, signal.SIGKILL)
        assert code == -signal.SIGKILL
        killed_at.append(_steps_logged(run))
    final = subprocess.run(_command(base, data, run), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "resuming from step-" in final.stderr
    a = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6, f"killed after {killed_at} logged steps"
    assert _losses(run) == pytest.approx(_losses(reference), abs=1e-6)


def test_sigterm_saves_and_says_how_to_resume(setup, tmp_path):
    base, data, _ = setup
    run = tmp_path / "run"
    code, err = _run_until(_command(base, data, run), run, 7, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint saved" in err and "Re-run the same command" in err
    saved = sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert saved[-1] == _steps_logged(run)  # the step it stopped at is the newest checkpoint
    assert not (run / "adapter").exists()
