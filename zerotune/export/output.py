"""How every export format writes its folder: whole or not at all, marked so a later export may replace
it, and with a small manifest (zerotune.json) that carries what the weights alone cannot: the chat
format's end-of-turn token, the run's system prompt and which adapter the weights came from."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MANIFEST = "zerotune.json"


class ExportError(RuntimeError):
    """An export the user asked for cannot be made; the message names the input and why."""


def read_manifest(folder: Path) -> dict:
    """The zerotune.json of an export folder, or {} when it has none (a plain model folder)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: unreadable export manifest ({err})") from None


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write zerotune.json into folder."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (Path(folder) / MANIFEST).write_text(text, encoding="utf-8")


def _check_replaceable(final: Path) -> None:
    # Replacing `final` deletes it, so only ever replace an earlier export, never a folder of the
    # user's own that --out happened to name.
    if not final.exists():
        return
    if not final.is_dir():
        raise ExportError(f"{final}: exists and is not a folder; choose another --out")
    if any(final.iterdir()) and not (final / MANIFEST).is_file():
        raise ExportError(f"{final}: exists, is not empty and is not a zerotune export; choose another --out")


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh folder beside `final` to write into; it becomes `final` only if the block succeeds.

    Args:
        final: the export folder to create or replace.
    Returns:
        (yields) the temporary folder; on error it is deleted and `final` is left as it was.
    """
    final = Path(final)
    _check_replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def architecture(model_dir: Path) -> str:
    """The first entry of a model folder's config.json `architectures` (e.g. "LlamaForCausalLM")."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{model_dir}: not a model folder (no config.json)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: unreadable ({err})") from None
    archs = config.get("architectures") or []
    if not archs:
        raise ExportError(f"{path}: names no architecture")
    return archs[0]
