"""Checkpoints that survive a dying Colab session.

A checkpoint holds the trainable weights (the adapter, or every weight for full fine-tuning), the
optimizer and scheduler, the RNG states (python, numpy, torch, CUDA), the data position and the
step. It is written to a temporary folder, fsynced, checksummed in manifest.json and renamed into
place, so a crash mid-write leaves the previous checkpoint as the newest intact one. An optional
mirror folder (a mounted Google Drive, say) receives a copy; resume takes the newest intact
checkpoint from either place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zerotune.train.loop import LoopState

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which and why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """This process's RNG states (python, numpy, torch, CUDA), as a checkpoint stores them."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def serialize(obj) -> bytes:
    """obj as torch.save writes it: how another process's state travels to the main process."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def trainable_state(model: torch.nn.Module, full: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The weights training changes (LoRA matrices, or all of them for full fine-tuning).

    Args:
        model: the trained model.
        full: every weight gathered in full, when a sharding engine (FSDP, ZeRO) holds only pieces.
    """
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            name = name.replace("_fsdp_wrapped_module.", "")
            out[name] = (p if full is None else full[name]).detach().contiguous().cpu()
    return out


def _write(tmp: Path, model, optimizer, scheduler, state: LoopState, fingerprint: dict,
           weights: dict | None, rank_files: dict | None) -> None:
    tmp.mkdir(parents=True)
    save_file(weights if weights is not None else trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    for name, data in (rank_files or {}).items():
        (tmp / name).write_bytes(data)
    info = {"step": state.step, "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
            "tokens_seen": state.tokens_seen, "scheduler": scheduler.state_dict(), "fingerprint": fingerprint,
            "saved_at": time.time()}
    (tmp / "state.json").write_text(json.dumps(info), encoding="utf-8")
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        _fsync(tmp / name)
    manifest = {name: _sha256(tmp / name) for name in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync(tmp / MANIFEST)


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)


def _prune(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: LoopState, *, fingerprint: dict,
                    keep: int = 2, mirror: Path | None = None, weights: dict | None = None,
                    rank_files: dict | None = None) -> Path:
    """Write checkpoints/step-N atomically (and to the mirror), keeping the newest `keep`.

    Args:
        run_dir: the run directory.
        model, optimizer, scheduler: training objects.
        state: the loop state after the step.
        fingerprint: what the checkpoint may resume into (see recipe.fingerprint).
        keep: how many checkpoints to keep in each place.
        mirror: optional second folder that also receives the checkpoint.
        weights: the trainable weights when they are not model's own (gathered from shards).
        rank_files: what the other processes of a multi-process run must get back on resume
            (rng-rank1.pt...): file name -> its bytes, as `serialize` made them there.
    Returns:
        The checkpoint folder.
    Raises:
        CheckpointError: the write failed (disk full...); earlier checkpoints are untouched.
    """
    folder = run_dir / "checkpoints"
    final = folder / f"step-{state.step}"
    tmp = folder / f".tmp-step-{state.step}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _write(tmp, model, optimizer, scheduler, state, fingerprint, weights, rank_files)
        _publish(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p.name for p in list_checkpoints(folder)]
        raise CheckpointError(f"could not save checkpoint step-{state.step} in {folder}: {err.strerror or err}; "
                              f"previous checkpoint {previous[0] if previous else '(none)'} is intact") from None
    _prune(folder, keep)
    if mirror is not None:
        _mirror(final, Path(mirror), keep)
    return final


def _mirror(src: Path, mirror: Path, keep: int) -> None:
    tmp = mirror / f".tmp-{src.name}"
    try:
        mirror.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        _publish(tmp, mirror / src.name)
        _prune(mirror, keep)
    except OSError as err:  # a flaky network drive must not kill training
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"warning: could not mirror {src.name} to {mirror}: {err}")


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders (step-N) in a folder, newest step first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def is_intact(path: Path) -> bool:
    """True when every file the manifest names exists with its recorded checksum."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return bool(manifest) and all(_sha256(path / name) == digest for name, digest in manifest.items())
    except (OSError, ValueError):
        return False


def find_resumable(run_dir: Path, mirror: Path | None = None) -> tuple[Path | None, list[Path]]:
    """The newest intact checkpoint in the run or the mirror, and the damaged ones skipped on the way."""
    candidates = list_checkpoints(run_dir / "checkpoints") + (list_checkpoints(Path(mirror)) if mirror else [])
    candidates.sort(key=lambda p: int(p.name[5:]), reverse=True)
    damaged = []
    for path in candidates:
        if is_intact(path):
            return path, damaged
        damaged.append(path)
    return None, damaged


def read_info(path: Path) -> dict:
    """A checkpoint's state.json."""
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def rank_file(path: Path, stem: str, rank: int) -> Path | None:
    """A process's own file in a checkpoint (rng.pt for the main process, rng-rank1.pt...), if there."""
    found = path / (f"{stem}.pt" if rank == 0 else f"{stem}-rank{rank}.pt")
    return found if found.is_file() else None


def load_optimizer(path: Path, optimizer, rank: int = 0) -> None:
    """Restore this process's optimizer state (its own shard when the engine splits it)."""
    optimizer.load_state_dict(torch.load(rank_file(path, "optimizer", rank) or path / "optimizer.pt",
                                         weights_only=True))


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int = 0) -> LoopState:
    """Restore weights, optimizer (unless None), scheduler and RNG from a checkpoint; returns the loop
    state to go on from. `rank` picks a multi-process run's own RNG state."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device))
    if optimizer is not None:
        load_optimizer(path, optimizer, rank)
    info = read_info(path)
    scheduler.load_state_dict(info["scheduler"])
    rng = rank_file(path, "rng", rank)
    if rng is not None:  # else saved by fewer processes: this one keeps its seeded RNG
        _set_rng_state(torch.load(rng, weights_only=True))
    return LoopState(step=info["step"], epoch=info["epoch"], step_in_epoch=info["step_in_epoch"],
                     tokens_seen=info["tokens_seen"])
