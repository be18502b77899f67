"""End to end through the CLI on the embedded default model (slow: real 135M weights on CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "zerotune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200)
    return proc


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_train_then_generate_on_embedded_model(tmp_path):
    src = ROOT / "examples" / "support_en"
    train = tmp_path / "train.jsonl"
    evalf = tmp_path / "eval.jsonl"
    train.write_text("".join((src / "train.jsonl").read_text().splitlines(keepends=True)[:32]))
    evalf.write_text("".join((src / "eval.jsonl").read_text().splitlines(keepends=True)[:4]))
    run = tmp_path / "run"
    proc = _cli("train", "--data", str(train), "--eval-data", str(evalf), "-o", str(run), "--max-steps", "3",
                "train.batch_size=4", "eval.max_new_tokens=48", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run directory:" in proc.stdout and "exact_match" in proc.stdout

    assert _files(run) == {
        "config.yaml", "metrics.jsonl", "loss.png", "data/train.jsonl", "data/eval.jsonl", "data/schema.json",
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/README.md",
        "adapter/tokenizer.json", "adapter/tokenizer_config.json", "adapter/chat_template.jinja",
        "eval/metrics.json", "eval/samples.jsonl", "eval/report.md", "eval/report.html",
        "eval/loss_curve.png", "eval/metrics.png",
        *(f"checkpoints/step-3/{name}" for name in ("trainable.safetensors", "optimizer.pt", "rng.pt", "state.json",
                                                     "manifest.json")),
    }
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["tokens_per_second"] > 0 for s in steps)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 4 and "base" in metrics

    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(run / "adapter")).r == 16

    gen = _cli("generate", str(run), "Hi, Maria Lopez here, order 48213: the blender arrived broken.",
               "--max-new-tokens", "40", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.strip()


def test_bad_data_exits_2_and_leaves_no_run_dir(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "a", \n')
    proc = _cli("train", "--data", str(bad), "-o", str(tmp_path / "run"), "--max-steps", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
