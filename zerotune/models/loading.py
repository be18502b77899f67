"""Where a model comes from and how it is loaded: hub id, local HF folder, .gguf file, run directory,
or (when nothing is named) the embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from zerotune.models import embedded


class ModelLoadError(RuntimeError):
    """A model the user named cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference.

    kind: "embedded" | "gguf" | "local" | "hub".
    path: what from_pretrained takes (a folder or a hub id).
    name: what the user asked for (recorded in config.yaml; None for the embedded default).
    """

    kind: str
    path: str
    name: str | None


def is_run_dir(path: str | Path) -> bool:
    """True when path is a zerotune run directory (it holds the resolved config.yaml)."""
    p = Path(path)
    return p.is_dir() and (p / "config.yaml").is_file() and not (p / "config.json").is_file()


def resolve_source(name: str | None) -> ModelSource:
    """Turn a --model value into a loadable source.

    Args:
        name: None (embedded default), a .gguf file, a local HF folder, or a hub id.
    Returns:
        The ModelSource; GGUF files are converted (once, cached) to an HF folder.
    """
    if name is None:
        return ModelSource("embedded", str(embedded.embedded_dir()), None)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", str(embedded.converted_dir(path.resolve())), name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        return ModelSource("local", str(path), name)
    if path.exists():
        raise ModelLoadError(f"{path}: expected a model folder, a .gguf file or a hub id")
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ModelSource("hub", name, name)
    raise ModelLoadError(f"{name}: no such file or folder, and not a hub id (owner/name)")


def _hub_error(source: ModelSource, err: Exception) -> ModelLoadError:
    if source.kind == "hub":
        return ModelLoadError(
            f"could not load {source.name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Without network access, pass a local folder or .gguf file with --model."
        )
    return ModelLoadError(f"could not load model from {source.path}: {type(err).__name__}: {err}")


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    """The source's tokenizer, with a pad token set (left padding is chosen per use)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _hub_error(source, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(source: ModelSource, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
               quantization_config=None):
    """The source's causal LM in eval mode.

    Args:
        source: from resolve_source.
        dtype: weight dtype.
        trust_remote_code: run model code from the hub (only when the user says so).
        quantization_config: e.g. a BitsAndBytesConfig for QLoRA.
    Returns:
        The model.
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": torch.cuda.current_device()})
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error(source, err) from None
    return model.eval()


def display_name(name: str | None) -> str:
    """How a model is named in messages and reports."""
    return embedded.EMBEDDED_NAME if name is None else name
