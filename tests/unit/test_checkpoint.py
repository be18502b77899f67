"""Checkpoints: resume, damaged checkpoints, refused resumes, disk full."""

import errno
import json

import pytest
import torch
from safetensors.torch import load_file

from tiny import ROWS, save_tiny
from zerotune.config import build_config
from zerotune.train import checkpoint
from zerotune.train.recipe import TrainError, train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")


def _cfg(base, tmp_path, out="run", **train_kw):
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS * 3))
    t = {"output": str(tmp_path / out), "max_steps": 6, "batch_size": 2, "checkpoint_every_steps": 2,
         "lr": 1e-2, "keep_checkpoints": 5, **train_kw}
    return build_config({"model": {"name": str(base)}, "data": {"train": str(data), "eval_fraction": 0.0},
                         "lora": {"dropout": 0.1}, "train": t})


def _adapter(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_checkpoints_written_atomically_with_manifest(base, tmp_path):
    result = train(_cfg(base, tmp_path), progress=False)
    names = [p.name for p in checkpoint.list_checkpoints(result.run_dir / "checkpoints")]
    assert names == ["step-6", "step-4", "step-2"]
    ck = result.run_dir / "checkpoints" / "step-4"
    assert {p.name for p in ck.iterdir()} == {"trainable.safetensors", "optimizer.pt", "rng.pt", "state.json",
                                              "manifest.json"}
    assert checkpoint.is_intact(ck) and checkpoint.read_info(ck)["step"] == 4
    assert not list((result.run_dir / "checkpoints").glob(".tmp*"))


def test_resume_from_each_checkpoint_is_exact(base, tmp_path):
    full = train(_cfg(base, tmp_path, out="full"), progress=False).run_dir
    losses = [json.loads(line)["loss"] for line in (full / "metrics.jsonl").read_text().splitlines()]
    for step in (2, 4):
        run = tmp_path / f"cut{step}"
        run.mkdir()
        (run / "checkpoints").mkdir()
        import shutil

        shutil.copytree(full / "checkpoints" / f"step-{step}", run / "checkpoints" / f"step-{step}")
        resumed = train(_cfg(base, tmp_path, out=f"cut{step}"), progress=False).run_dir
        a, b = _adapter(full), _adapter(resumed)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
        got = [json.loads(line)["loss"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
        assert got == pytest.approx(losses[step:], abs=1e-6)


def test_damaged_latest_checkpoint_falls_back(base, tmp_path, capsys):
    run = train(_cfg(base, tmp_path), progress=False).run_dir
    (run / "adapter").rename(run / "adapter-first")
    latest = run / "checkpoints" / "step-6"
    data = (latest / "trainable.safetensors").read_bytes()
    (latest / "trainable.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    corrupt = run / "checkpoints" / "step-4" / "optimizer.pt"
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    corrupt.write_bytes(bytes(raw))
    found, damaged = checkpoint.find_resumable(run)
    assert found.name == "step-2" and [p.name for p in damaged] == ["step-6", "step-4"]
    train(_cfg(base, tmp_path), progress=False)
    assert "damaged" in capsys.readouterr().err
    a, b = _adapter(run), load_file(str(run / "adapter-first" / "adapter_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_changed_run_is_refused_unless_restart(base, tmp_path):
    train(_cfg(base, tmp_path), progress=False)
    changed = build_config({**_cfg(base, tmp_path).model_dump(mode="json"), "lora": {"r": 4}})
    with pytest.raises(TrainError, match="adapter: lora r=16 .* -> lora r=4"):
        train(changed, progress=False)
    train(changed, progress=False, restart=True)


def test_disk_full_keeps_previous_checkpoint(base, tmp_path, monkeypatch):
    cfg = _cfg(base, tmp_path, max_steps=4)
    calls = {"n": 0}
    real = checkpoint.save_file

    def full_on_second(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_on_second)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*step-2 is intact"):
        train(cfg, progress=False)
    ck = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ck.iterdir()] == ["step-2"] and checkpoint.is_intact(ck / "step-2")


def test_mirror_receives_checkpoints_and_is_used(base, tmp_path):
    mirror = tmp_path / "drive"
    run = train(_cfg(base, tmp_path, checkpoint_mirror=str(mirror)), progress=False).run_dir
    assert [p.name for p in checkpoint.list_checkpoints(mirror)] == ["step-6", "step-4", "step-2"]
    import shutil

    shutil.rmtree(run / "checkpoints")  # the local disk was lost with the session
    found, _ = checkpoint.find_resumable(run, mirror)
    assert found == mirror / "step-6"
    weights, final = load_file(str(found / "trainable.safetensors")), _adapter(run)
    assert len(weights) == len(final)
    for name, tensor in weights.items():  # the mirrored step-6 weights are the final adapter's
        assert torch.equal(tensor, final[name.replace(".default", "")])
