"""`train()`: the whole fine-tuning recipe, top to bottom.

Everything a user can get wrong (config, data, model name, LoRA targets, precision) is checked before
the run directory is created, so a failed start leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from zerotune import hardware
from zerotune.config import Config, dump_config
from zerotune.data.packing import steps_per_epoch
from zerotune.data.schema import Schema, infer_schema
from zerotune.train.inputs import training_rows
from zerotune.data.tokenize import tokenize_rows
from zerotune.models.attention import use_packed_attention
from zerotune.models.constrain import token_bytes
from zerotune.models.inference import SCHEMA_FILE
from zerotune.models.loading import ModelSource, display_name, load_model, load_tokenizer, resolve_source
from zerotune.models.targets import resolve_targets
from zerotune.models.templates import resolve_format
from zerotune.train import checkpoint, continual, distributed, loop, neftune
from zerotune.train.optim import build_optimizer, build_scheduler
from zerotune.train.progress import RunLog
from zerotune.train.signals import Interrupted, StopFlag


class TrainError(RuntimeError):
    """Training cannot start as configured; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    final_loss: float
    eval_loss: float | None
    seconds: float
    is_main: bool = True  # False in the other processes of a multi-process run: they write nothing


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run is repeatable."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _precision(cfg: Config, device: hardware.DeviceInfo) -> tuple[str, torch.dtype, torch.dtype | None]:
    """(precision name, weight dtype, autocast dtype). LoRA on GPU keeps frozen weights in half
    precision; on CPU weights stay fp32 and bf16 only autocasts the matmuls."""
    precision = hardware.choose_precision(device, cfg.train.precision)
    if precision == "fp16" and device.kind == "cpu":
        raise TrainError("fp16 training needs a GPU; use train.precision=fp32 (or bf16 on AMX CPUs)")
    if precision == "fp32":
        return precision, torch.float32, None
    half = _DTYPES[precision]
    weights = half if device.kind != "cpu" and cfg.lora.method != "full" else torch.float32
    return precision, weights, half


def _quantization(cfg: Config, device: hardware.DeviceInfo, compute: torch.dtype):
    if cfg.lora.method != "qlora":
        return None
    if device.kind != "cuda":
        raise TrainError("QLoRA (4-bit NF4 through bitsandbytes) needs an NVIDIA GPU; on this machine use "
                         "--method lora")
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainError("QLoRA needs bitsandbytes: pip install bitsandbytes") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def attach_adapter(model, cfg: Config):
    """Wrap the base model for training: LoRA/DoRA adapters (base frozen; train.init_adapter's when
    set) or, for full fine-tuning, every weight trainable.

    Args:
        model: the loaded base model.
        cfg: the run config (lora section).
    Returns:
        The trainable model.
    """
    if cfg.lora.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.lora.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if cfg.train.init_adapter:
        return continual.load_adapter(model, continual.adapter_dir(cfg.train.init_adapter), cfg.lora.dropout,
                                      display_name(cfg.model.name))
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
                      target_modules=resolve_targets(model, cfg.lora.targets), use_dora=cfg.lora.method == "dora",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _total_steps(cfg: Config, n_examples: int, n_budget: int | None = None) -> tuple[int, int]:
    """(optimizer steps of the run, epochs they span).

    Args:
        n_examples: examples in one pass (augmented rows and an epoch's replayed rows included).
        n_budget: examples one epoch of the budget counts (default n_examples). Augmented copies do not
            lengthen training: `epochs` counts passes over the original rows' worth of examples, so with
            slot-swapped copies each original is seen about as often as before in a fresh wording.
    """
    per_epoch = steps_per_epoch(n_examples, cfg.train.batch_size)
    share = 1.0 if n_budget is None else n_budget / n_examples  # 1: whole passes, as without augmentation
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * share * per_epoch))
    return total, math.ceil(total / per_epoch)


def _write_splits(run_dir: Path, train_rows: list[dict], eval_rows: list[dict], schema: Schema | None) -> None:
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train_rows), ("eval.jsonl", eval_rows)):
        with open(data_dir / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (data_dir / SCHEMA_FILE).write_text(schema.to_json() if schema else "null", encoding="utf-8")


def save_final(model, tokenizer, run_dir: Path, method: str, state_dict: dict | None = None) -> Path:
    """Write the final adapter (or full model) atomically: a temporary folder renamed into place.
    state_dict: every weight gathered in full, when a sharding engine holds only pieces."""
    final = run_dir / ("model" if method == "full" else "adapter")
    tmp = run_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _memory_plan(cfg: Config, source: ModelSource, device: hardware.DeviceInfo, tokenized,
                 shards: int = 1) -> hardware.Plan:
    """The same plan `zerotune plan` prints, for this device and data; refuses a run that cannot fit
    before any weights are loaded. The plan is for one device: with `shards` processes splitting the
    state (FSDP, ZeRO) a run over the budget only gets a warning."""
    lengths = sorted(len(e.input_ids) for e in tokenized.examples)
    # the longest packed row a step can make: the step's examples laid end to end up to batch_tokens
    # (an example longer than that gets a row of its own)
    row = max(lengths[-1], min(cfg.train.batch_tokens, sum(lengths[-cfg.train.batch_size:])))
    try:
        model_config = hardware.load_model_config(source.path)
    except hardware.HardwareError as err:
        raise TrainError(f"cannot read the model config of {source.path} to plan memory: {err}") from None
    memory_plan = hardware.plan(
        model_config, device=device, seq_len=max(row, 16), method=cfg.lora.method,
        r=cfg.lora.r, targets=cfg.lora.targets, batch_size=1, precision=cfg.train.precision,
        gradient_checkpointing=cfg.train.gradient_checkpointing, lora_dropout=cfg.lora.dropout,
        allow_qlora=False, model_name=cfg.model.name)
    if not memory_plan.fits and shards > 1:
        print(f"warning: on one device this run would not fit ({memory_plan.reason}); {shards} processes share "
              "its state", file=sys.stderr)
    elif not memory_plan.fits:
        raise TrainError(f"this run does not fit {device.name}: {memory_plan.reason}\n{memory_plan.render()}")
    return memory_plan


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint(cfg: Config, train_rows: list[dict], eval_rows: list[dict], replay_rows: list[dict] = ()) -> dict:
    """What a checkpoint may only resume into unchanged: model, data, adapter shape, batch layout, and
    for continual learning the adapter it started from and the old rows it replays."""
    fp = {"model": str(cfg.model.name), "data": _digest([train_rows, eval_rows]),
          "adapter": f"{cfg.lora.method} r={cfg.lora.r} alpha={cfg.lora.alpha} targets={cfg.lora.targets}",
          "batch": f"size={cfg.train.batch_size} tokens={cfg.train.batch_tokens} seq={cfg.data.max_seq_len}",
          "seed": str(cfg.train.seed), "template": f"{cfg.model.chat_template} system={cfg.model.system_prompt}"}
    if cfg.train.init_adapter or cfg.data.replay:  # absent otherwise, so checkpoints of earlier versions still resume
        fp["continual"] = (f"init={cfg.train.init_adapter} replay={cfg.data.replay} "
                           f"old={_digest(list(replay_rows)) if replay_rows else None}")
    return fp


def _resume_point(run_dir: Path, cfg: Config, fp: dict, restart: bool, main: bool = True) -> Path | None:
    """The checkpoint to resume from, None to start fresh; refuses a checkpoint of a different run.
    Only the main process deletes (restart)."""
    mirror = Path(cfg.train.checkpoint_mirror) if cfg.train.checkpoint_mirror else None
    if restart and not main:
        return None
    if restart:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        for stale in ("metrics.jsonl", "loss.png"):
            (run_dir / stale).unlink(missing_ok=True)
        return None
    found, damaged = checkpoint.find_resumable(run_dir, mirror)
    for bad in damaged:
        print(f"warning: checkpoint {bad} is damaged (checksum mismatch or missing files); skipped", file=sys.stderr)
    if found is None:
        if damaged:
            print("warning: no intact checkpoint; starting from step 0", file=sys.stderr)
        return None
    saved = checkpoint.read_info(found)["fingerprint"]
    changed = [f"{k}: {saved.get(k)} -> {fp.get(k)}" for k in {**saved, **fp} if saved.get(k) != fp.get(k)]
    if changed:
        raise TrainError(f"{run_dir} holds checkpoints of a different run ({'; '.join(changed)}). Resuming would "
                         "be wrong: pass --restart to start over in this directory, or choose another --output.")
    return found


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines of steps after the checkpoint: they are about to be trained again."""
    if path.is_file():
        keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _encode_all(cfg: Config, tokenizer, fmt, *row_sets: list[dict]):
    return [tokenize_rows(rows, tokenizer, fmt, cfg.data.max_seq_len, system_prompt=cfg.model.system_prompt,
                          too_long=cfg.data.prepare.too_long) for rows in row_sets]


def schema_note(schema: Schema | None, why: str, setting: str, byte_level: bool) -> str:
    """The run header's line on the answer schema eval, generate and serve will keep answers to."""
    if schema is None:
        return f"none ({why}); answers are decoded freely"
    use = "eval, generate and serve keep answers to it" if setting == "auto" else "not used (generate.constrain=off)"
    if not byte_level:
        use = "not used: the tokenizer is not byte-level BPE, so answers are decoded freely"
    return f"{schema.describe()}; {use}"


def _start_run_dir(run_dir: Path, cfg: Config, step: int, train_rows: list[dict], eval_rows: list[dict],
                   schema: Schema | None) -> None:
    _truncate_metrics(run_dir / "metrics.jsonl", step)  # steps after it are trained again
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    _write_splits(run_dir, train_rows, eval_rows, schema)


def _rank_files(dist: distributed.Dist, optimizer) -> dict:
    """What the other processes must get back from a checkpoint: their RNG, and their optimizer shard
    when the engine splits optimizer state. Collective: every process calls it."""
    if dist.world == 1:
        return {}
    rngs = dist.gather(checkpoint.serialize(checkpoint.rng_state())) or []
    files = {f"rng-rank{r}.pt": b for r, b in enumerate(rngs) if r}
    if dist.sharded:
        optim = dist.gather(checkpoint.serialize(optimizer.state_dict())) or []
        files |= {f"optimizer-rank{r}.pt": b for r, b in enumerate(optim) if r}
    return files


def train(cfg: Config, *, progress: bool = True, restart: bool = False) -> TrainResult:
    """Fine-tune cfg.model on cfg.data and write the run directory cfg.train.output.

    Re-running the same command in the same run directory resumes from the newest intact checkpoint.
    With train.init_adapter it continues an earlier adapter (replaying data.replay old rows per new
    one); under `accelerate launch` every process runs this and the main process writes the run.

    Args:
        cfg: the resolved config.
        progress: show a progress bar.
        restart: discard the run directory's checkpoints and start from step 0.
    Returns:
        TrainResult with the run directory and final losses.
    Raises:
        Interrupted: a SIGTERM/SIGINT stopped training (after a checkpoint was written).
    """
    seed_everything(cfg.train.seed)
    cfg, notes = continual.resolve(cfg)
    device = hardware.detect_device()
    precision, weight_dtype, autocast_dtype = _precision(cfg, device)
    source: ModelSource = resolve_source(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    fmt = resolve_format(tokenizer, cfg.model.chat_template, cfg.model.name or source.path)
    splits = training_rows(cfg.data, seed=cfg.train.seed)
    train_rows, eval_rows = splits.train, splits.eval
    replay_rows = continual.replay_rows(cfg)
    tokenized, eval_tok, replay_tok = _encode_all(cfg, tokenizer, fmt, train_rows, eval_rows, replay_rows)
    if not tokenized.examples:
        raise TrainError(f"no training example fits data.max_seq_len={cfg.data.max_seq_len} tokens")
    replay_count = round(cfg.data.replay * len(tokenized.examples)) if replay_tok.examples else 0
    n_made = sum(1 for r in train_rows if r.get("augmented"))
    total_steps, epochs = _total_steps(cfg, len(tokenized.examples) + replay_count,
                                       max(1, len(tokenized.examples) - n_made) + replay_count)
    dist = distributed.start(device.kind)
    memory_plan = _memory_plan(cfg, source, device, tokenized, dist.world if dist.sharded else 1)
    run_dir = Path(cfg.train.output)
    fp = fingerprint(cfg, train_rows, eval_rows, replay_rows)
    resume_from = _resume_point(run_dir, cfg, fp, restart, dist.is_main)

    quant = _quantization(cfg, device, autocast_dtype or torch.float32)
    model = load_model(source, weight_dtype, cfg.model.trust_remote_code, quantization_config=quant)
    model = attach_adapter(model, cfg)
    use_packed_attention(model)  # attention per packed example, not over the whole row under a mask
    neftune.attach(model, cfg.train.neftune_alpha)
    if memory_plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch_device = dist.device or torch.device("cuda" if device.kind == "cuda" else "cpu")
    if quant is None:
        model.to(torch_device)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_steps)
    if dist.rank:  # its own dropout masks; the main process draws as a lone one would
        seed_everything(cfg.train.seed + dist.rank)
    state = loop.LoopState()
    if resume_from is not None:  # weights go in before an engine may shard them
        state = checkpoint.load_checkpoint(resume_from, model, None if dist.sharded else optimizer, scheduler,
                                           dist.rank)
    optimizer = dist.prepare(model, optimizer)
    if resume_from is not None and dist.sharded:
        if not checkpoint.rank_file(resume_from, "optimizer", dist.world - 1) or \
                checkpoint.rank_file(resume_from, "optimizer", dist.world):
            raise TrainError(f"{resume_from} holds optimizer shards of another number of processes; resume with "
                             f"as many as saved it (not {dist.world})")
        checkpoint.load_optimizer(resume_from, optimizer, dist.rank)
    setup = loop.LoopSetup(
        examples=tokenized.examples, batch_size=cfg.train.batch_size, row_tokens=cfg.train.batch_tokens,
        seed=cfg.train.seed, epochs=epochs, total_steps=total_steps, max_grad_norm=cfg.train.max_grad_norm,
        device=torch_device, autocast_dtype=autocast_dtype,
        grad_scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
        replay=replay_tok.examples, replay_count=replay_count, dist=dist)

    schema, no_schema = infer_schema(train_rows)
    if dist.is_main:
        _start_run_dir(run_dir, cfg, state.step, train_rows, eval_rows, schema)
    log = RunLog(run_dir, total_steps, progress=progress and dist.is_main, start_step=state.step)
    if dist.is_main:
        log.header(display_name(cfg.model.name), device, precision, fmt.name, len(tokenized.examples),
                   len(eval_tok.examples), tokenized.too_long, total_steps)
        print(f"memory    {memory_plan.total_bytes / 2**30:.2f} GiB planned of {memory_plan.budget_bytes / 2**30:.1f}"
              f" GiB usable; gradient checkpointing {'on' if memory_plan.gradient_checkpointing else 'off'}",
              file=sys.stderr)
        for note in splits.notes:
            print(f"data      {note}", file=sys.stderr)
        byte_level = schema is None or token_bytes(tokenizer) is not None
        print(f"schema    {schema_note(schema, no_schema, cfg.generate.constrain, byte_level)}", file=sys.stderr)
        for note in notes:
            print(f"continue  {note}", file=sys.stderr)
        if replay_count:
            print(f"replay    {replay_count} old rows per epoch from {cfg.data.replay_data}", file=sys.stderr)
        if dist.world > 1:
            print(f"processes {dist.world} ({dist.accelerator.distributed_type.name})", file=sys.stderr)
        if resume_from is not None:
            print(f"resuming from {resume_from.name} (step {state.step} of {total_steps})", file=sys.stderr)
    per_epoch = steps_per_epoch(len(tokenized.examples) + replay_count, cfg.train.batch_size)
    mirror = Path(cfg.train.checkpoint_mirror) if cfg.train.checkpoint_mirror else None
    last_save = time.monotonic()

    def save(st: loop.LoopState) -> None:
        nonlocal last_save
        files = _rank_files(dist, optimizer)
        full = dist.full_state() if dist.sharded else None
        if dist.is_main:
            checkpoint.save_checkpoint(run_dir, model, optimizer, scheduler, st, fingerprint=fp,
                                       keep=cfg.train.keep_checkpoints, mirror=mirror, rank_files=files,
                                       weights=checkpoint.trainable_state(model, full) if full else None)
        last_save = time.monotonic()

    def on_step(st: loop.LoopState, record: dict) -> None:
        every = cfg.train.eval_every_steps
        if eval_tok.examples and every and st.step % every == 0 and st.step < total_steps:
            record["eval_loss"] = loop.eval_loss(model, eval_tok.examples, setup)
        if dist.is_main:
            log.step(record)
        by_steps = cfg.train.checkpoint_every_steps and st.step % cfg.train.checkpoint_every_steps == 0
        minutes = cfg.train.checkpoint_every_minutes
        by_time = dist.any(minutes is not None and time.monotonic() - last_save >= minutes * 60)
        if by_steps or by_time or st.step_in_epoch == per_epoch or st.step == total_steps:
            save(st)

    with StopFlag() as stop:
        state = loop.run(model, optimizer, scheduler, setup, state, on_step=on_step,
                         should_stop=lambda: dist.any(stop()))
        if state.step < total_steps:  # stopped by a signal (in some process: they all stop together)
            if dist.any(dist.is_main and not (run_dir / "checkpoints" / f"step-{state.step}").is_dir()):
                save(state)
            if dist.is_main:
                log.finish(None)
            dist.end()
            raise Interrupted(state.step, stop.signal or signal.SIGTERM)
    final_eval = loop.eval_loss(model, eval_tok.examples, setup) if eval_tok.examples else None
    full = dist.full_state() if dist.sharded else None
    if dist.is_main:
        save_final(model, tokenizer, run_dir, cfg.lora.method, full)
        print(continual.forgetting_hint(cfg, run_dir) or "", end="", file=sys.stderr)
    seconds = log.finish(final_eval) if dist.is_main else time.perf_counter() - log.started
    dist.barrier()  # the adapter is written before any process returns
    dist.end()
    return TrainResult(run_dir, state.step, log.last_loss, final_eval, seconds, dist.is_main)
