"""Continual learning: go on training an earlier run's adapter on new data, replaying a share of the
old rows in every epoch so the model forgets less of what it learned before.

    zerotune train --init-adapter runs/v1 --data new.jsonl -o runs/v2 data.replay=0.5
"""

from __future__ import annotations

import json
from pathlib import Path

from zerotune.config import Config, ConfigError, load_config, update
from zerotune.data.formats import DataError, read_examples


def adapter_dir(path: str) -> Path:
    """The adapter folder train.init_adapter names: a run directory's adapter/, or the folder itself.

    Raises:
        ConfigError: nothing loadable there, with what was looked for.
    """
    p = Path(path)
    for folder in (p / "adapter", p):
        if (folder / "adapter_config.json").is_file():
            return folder
    if (p / "model" / "config.json").is_file() or (p / "config.json").is_file():
        raise ConfigError(f"train.init_adapter: {p} is a fully fine-tuned model, not an adapter; pass its model "
                          "folder as --model to train on top of it")
    raise ConfigError(f"train.init_adapter: {p} holds no adapter (looked for {p / 'adapter' / 'adapter_config.json'} "
                      f"and {p / 'adapter_config.json'}); has that run finished?")


def _init_run(adapter: Path) -> Path | None:
    """The run directory an adapter folder belongs to, if it is one."""
    run = adapter.parent
    return run if adapter.name == "adapter" and (run / "config.yaml").is_file() else None


def _adapter_lora(adapter: Path, cfg: Config) -> dict:
    """The lora section the adapter fixes: its rank, alpha, targets and DoRA-ness."""
    saved = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    targets = saved.get("target_modules")
    targets = sorted(targets) if isinstance(targets, list) else targets
    method = "dora" if saved.get("use_dora") else ("lora" if cfg.lora.method == "dora" else cfg.lora.method)
    return {"r": saved["r"], "alpha": float(saved["lora_alpha"]), "targets": targets, "method": method}


def resolve(cfg: Config) -> tuple[Config, list[str]]:
    """cfg with what train.init_adapter decides, and notes saying what was taken from it.

    The adapter's own r, alpha, target modules and DoRA setting replace the lora section (weights of
    another shape cannot be continued); the base model comes from the earlier run when none was chosen.
    data.replay_data defaults to the earlier run's data/train.jsonl.
    Raises:
        ConfigError: no adapter at train.init_adapter, a full fine-tune, or replay without old rows.
    """
    init = cfg.train.init_adapter
    if not init:
        if cfg.data.replay > 0 and not cfg.data.replay_data:
            raise ConfigError("data.replay mixes in old rows, but there are none: set train.init_adapter (a run "
                              "directory) or data.replay_data")
        return cfg, []
    if cfg.lora.method == "full":
        raise ConfigError("train.init_adapter continues a LoRA/DoRA adapter; lora.method=full cannot use one")
    adapter = adapter_dir(init)
    run = _init_run(adapter)
    if run is not None and Path(cfg.train.output).resolve() == run.resolve():
        raise ConfigError(f"train.init_adapter and train.output are both {run}: write the continued run to a new "
                          "--output, so the earlier run stays as it was")
    taken = _adapter_lora(adapter, cfg)
    notes = [f"lora.{k}={v} taken from the adapter (config said {getattr(cfg.lora, k)})"
             for k, v in taken.items() if v != getattr(cfg.lora, k)]
    sections: dict = {"lora": taken, "train": {"init_adapter": str(adapter)}}
    if run is not None:
        earlier = load_config(run / "config.yaml")
        if cfg.model.name is None and earlier.model.name is not None:
            sections["model"] = {"name": earlier.model.name}
            notes.append(f"model {earlier.model.name} taken from {run}")
        elif cfg.model.name != earlier.model.name:
            notes.append(f"warning: the adapter was trained on {earlier.model.name or 'the embedded default'}, "
                         f"this run uses {cfg.model.name or 'the embedded default'}")
        if cfg.data.replay > 0 and not cfg.data.replay_data:
            sections["data"] = {"replay_data": str(run / "data" / "train.jsonl")}
    elif cfg.data.replay > 0 and not cfg.data.replay_data:
        raise ConfigError(f"data.replay needs the old rows: {init} is an adapter folder, not a run directory with "
                          "data/train.jsonl, so set data.replay_data")
    return update(cfg, **sections), notes


def replay_rows(cfg: Config) -> list[dict]:
    """The old rows to replay (none when data.replay is 0).

    Raises:
        DataError: the replay file is missing or invalid.
    """
    if cfg.data.replay <= 0:
        return []
    path = Path(cfg.data.replay_data)
    if not path.is_file():
        raise DataError(f"{path}: replay data (data.replay_data) not found")
    rows = read_examples(str(path))
    if not rows:
        raise DataError(f"{path}: no rows to replay")
    return rows


def forgetting_hint(cfg: Config, run_dir: Path) -> str | None:
    """How to measure forgetting after a continued run: score the earlier run's eval set with both."""
    if not cfg.train.init_adapter:
        return None
    run = _init_run(adapter_dir(cfg.train.init_adapter))
    old_eval = run / "data" / "eval.jsonl" if run else None
    if old_eval is None or not old_eval.is_file() or old_eval.stat().st_size == 0:
        return None
    return (f"forgetting: score the earlier eval set before and after with\n"
            f"  zerotune eval {run} --data {old_eval} --out {run_dir}/eval-old/before\n"
            f"  zerotune eval {run_dir} --data {old_eval} --out {run_dir}/eval-old/after\n")


def load_adapter(model, adapter: Path, dropout: float, model_name: str):
    """The base model with the earlier adapter on it, trainable; dropout is this run's.

    Raises:
        ConfigError: the adapter does not fit the model (trained on another base).
    """
    from peft import LoraConfig, PeftModel

    conf = LoraConfig.from_pretrained(str(adapter))
    conf.lora_dropout, conf.inference_mode = dropout, False
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True, config=conf)
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise ConfigError(f"train.init_adapter: {adapter} does not fit {model_name}: {first}") from None
