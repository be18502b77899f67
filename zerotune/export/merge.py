"""Merged export: a run's adapter folded into its base weights, saved as a plain transformers folder
(safetensors + tokenizer + chat template) that loads with AutoModelForCausalLM and nothing else.

The ONNX and GGUF exports are built from this folder, so everything they need travels in it: the
run's chat template as the tokenizer's own, the end-of-turn token in generation_config's EOS list
(plain `generate` then stops where training taught the model to stop), and zerotune.json for the
system prompt and the adapter it was merged from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zerotune.export.output import ExportError, read_manifest, staged_dir, write_manifest
from zerotune.models.loading import ModelLoadError, display_name, is_run_dir
from zerotune.models.templates import TemplateError


def source_stamp(run_dir: Path) -> list[list]:
    """Name, size and mtime of the run's trained weights, so a stale merged folder can be recognised."""
    folder = run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir / "adapter"
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".json") and p.is_file())
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def is_current(run_dir: Path, merged_dir: Path) -> bool:
    """True when merged_dir holds a merge of the run's present weights."""
    if not (merged_dir / "config.json").is_file():
        return False
    return read_manifest(merged_dir).get("source_stamp") == source_stamp(run_dir)


def _checkpoint_dtype(model) -> torch.dtype | None:
    """The dtype the base checkpoint was stored in (merging happens in the load dtype, saving in this)."""
    from transformers import AutoConfig

    try:
        # local_files_only: the base was just loaded, so its config is on disk (or in the hub cache)
        config = AutoConfig.from_pretrained(model.config._name_or_path, local_files_only=True)
    except (OSError, ValueError):
        return None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def _load_merged(run_dir: Path):
    from zerotune.models.inference import load_run

    try:
        return load_run(run_dir, merge=True)
    except (ModelLoadError, TemplateError) as err:
        raise ExportError(str(err)) from None


def _set_generation_stops(model, tokenizer, fmt) -> None:
    from zerotune.models.generate import stop_ids

    gen = model.generation_config
    gen.eos_token_id = stop_ids(tokenizer, fmt)
    gen.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id


def export_merged(run_dir: str | Path, out: str | Path) -> Path:
    """Fold a run's adapter into the base model and save it as a standalone transformers folder.

    Args:
        run_dir: a run directory written by `zerotune train` (adapter/ or, for full fine-tuning, model/).
        out: the folder to write (replaced whole if it is an earlier export).
    Returns:
        out, holding model safetensors, config, generation_config, tokenizer, chat_template.jinja and
        zerotune.json.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not is_run_dir(run_dir):
        raise ExportError(f"{run_dir}: not a zerotune run directory (no config.yaml)")
    loaded = _load_merged(run_dir)
    model = loaded.model.to("cpu")
    dtype = _checkpoint_dtype(model)
    if dtype is not None and dtype != model.dtype:
        model = model.to(dtype)
    tokenizer = loaded.tokenizer
    tokenizer.chat_template = loaded.fmt.template  # the format the run was trained on, not the base's
    _set_generation_stops(model, tokenizer, loaded.fmt)
    with staged_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_manifest(tmp, {
            "format": "merged",
            "run_dir": str(run_dir.resolve()),
            "base_model": display_name(loaded.base_name),
            "chat_format": loaded.fmt.name,
            "end_of_turn": loaded.fmt.end_of_turn,
            "system_prompt": loaded.system_prompt,
            "source_stamp": source_stamp(run_dir),
        })
    return out
