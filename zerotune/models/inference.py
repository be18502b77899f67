"""Load what a later stage (eval, generate, chat, serve, export) is pointed at: a run directory
(base model + its adapter, with the run's chat template and system prompt), or a plain model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zerotune.models.loading import (ModelLoadError, ModelSource, display_name, is_run_dir, load_model,
                                     load_tokenizer, resolve_source)
from zerotune.data.schema import Schema, infer_schema
from zerotune.models.constrain import Constraint
from zerotune.models.generate import stop_ids
from zerotune.models.templates import ChatFormat, resolve_format

SCHEMA_FILE = "schema.json"  # RUN_DIR/data/schema.json, written by train
SCHEMA_ROWS = 5000  # rows of an older run's data/train.jsonl read to infer it


@dataclass
class Loaded:
    """A model ready to answer, with everything needed to prompt it the way it was trained."""

    model: torch.nn.Module
    tokenizer: object
    fmt: ChatFormat
    name: str
    system_prompt: str | None
    run_dir: Path | None
    base_name: str | None  # the base model of a run (None = embedded default)
    adapter: bool
    schema: Schema | None = None  # the answer structure the run was trained on (data/schema.py)
    _constraints: dict = field(default_factory=dict, repr=False)


def constraint_for(loaded: Loaded, setting: str) -> Constraint | None:
    """The decoding constraint of a loaded run (built once), or None: `setting` off, no schema, or a
    tokenizer that is not byte-level."""
    if setting == "off" or getattr(loaded, "schema", None) is None:
        return None
    if "auto" not in loaded._constraints:
        loaded._constraints["auto"] = Constraint.build(loaded.schema, loaded.tokenizer,
                                                       stop_ids(loaded.tokenizer, loaded.fmt))
    return loaded._constraints["auto"]


def run_schema(run_dir: Path) -> Schema | None:
    """RUN_DIR/data/schema.json; for runs trained before it existed, inferred from data/train.jsonl."""
    path = run_dir / "data" / SCHEMA_FILE
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        return Schema.from_json(text) if text.strip() not in ("", "null") else None
    train = run_dir / "data" / "train.jsonl"
    if not train.is_file():
        return None
    rows = []
    with open(train, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= SCHEMA_ROWS:
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("messages"), list):
                rows.append(row)
    return infer_schema(rows)[0]


def read_run_config(run_dir: Path):
    """The resolved Config a run directory was trained with."""
    from zerotune.config import ConfigError, load_config

    try:
        return load_config(run_dir / "config.yaml")
    except ConfigError as err:
        raise ModelLoadError(f"{run_dir}: unreadable run config: {err}") from None


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_run(run_dir: Path, *, merge: bool = False) -> Loaded:
    """A run directory's base model with its adapter (or its fully fine-tuned model).

    Args:
        run_dir: a directory written by `zerotune train`.
        merge: fold the adapter into the base weights (faster inference, no adapter toggling).
    Returns:
        Loaded with adapter=True unless merged or full fine-tuned.
    """
    cfg = read_run_config(run_dir)
    device = _device()
    if (run_dir / "model" / "config.json").is_file():
        source = ModelSource("local", str(run_dir / "model"), str(run_dir / "model"))
        model = load_model(source, _dtype(device), cfg.model.trust_remote_code).to(device)
        tokenizer = load_tokenizer(source)
        fmt = resolve_format(tokenizer, cfg.model.chat_template, cfg.model.name)
        return Loaded(model, tokenizer, fmt, str(run_dir), cfg.model.system_prompt, run_dir, cfg.model.name, False,
                      run_schema(run_dir))
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"{run_dir}: no trained adapter yet (adapter/ missing); has training finished?")
    from peft import PeftModel

    source = resolve_source(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    base = load_model(source, _dtype(device), cfg.model.trust_remote_code).to(device)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    if merge:
        model = model.merge_and_unload()
    fmt = resolve_format(tokenizer, cfg.model.chat_template, cfg.model.name or source.path)
    return Loaded(model, tokenizer, fmt, str(run_dir), cfg.model.system_prompt, run_dir, cfg.model.name, not merge,
                  run_schema(run_dir))


def load_plain(name: str | None, chat_template: str = "auto", trust_remote_code: bool = False) -> Loaded:
    """A model with no adapter: the embedded default (name None), a hub id, folder or .gguf."""
    device = _device()
    source = resolve_source(name)
    tokenizer = load_tokenizer(source, trust_remote_code)
    model = load_model(source, _dtype(device), trust_remote_code).to(device)
    fmt = resolve_format(tokenizer, chat_template, name or source.path)
    return Loaded(model, tokenizer, fmt, display_name(name), None, None, name, False)


def load_target(target: str | None, *, merge: bool = False, trust_remote_code: bool = False) -> Loaded:
    """Whatever a command was pointed at: a run directory, a model reference, or nothing (embedded)."""
    if target is not None and is_run_dir(target):
        return load_run(Path(target), merge=merge)
    return load_plain(target, trust_remote_code=trust_remote_code)
