"""Export a run: `merged` (adapter folded into the base, plain transformers folder), `onnx` (ONNX Runtime
GenAI with KV cache) or `gguf` (llama.cpp / Ollama files plus a Modelfile).

When the run's answers have a schema (data/schema.json), every export also carries it as grammars those
runtimes enforce (answer.gbnf, answer.lark, answer.schema.json: zerotune.export.grammar), so a deployed
model can decode the way `zerotune eval` scored it.

ONNX and GGUF are built from the merged folder, RUN_DIR/export/merged/, which is made (or remade, when
the run's weights changed since) on the way.
"""

from __future__ import annotations

from pathlib import Path

from zerotune.export.output import ExportError

FORMATS = ("merged", "onnx", "gguf")

__all__ = ["FORMATS", "ExportError", "export"]


def _merged_for(run_dir: Path, fmt: str, out: Path) -> Path:
    """The run's merged folder, made first when missing or stale."""
    from zerotune.export.merge import export_merged, is_current

    merged = out if fmt == "merged" else run_dir / "export" / "merged"
    if fmt == "merged" or not is_current(run_dir, merged):
        export_merged(run_dir, merged)
    return merged


def export(target: str, fmt: str, out: str | None = None, *, precision: str = "fp32",
           gguf_types: tuple[str, ...] = ("f16", "q8_0")) -> Path:
    """Export a run directory in one format.

    Args:
        target: the run directory.
        fmt: "merged", "onnx" or "gguf".
        out: output folder; default RUN_DIR/export/<fmt>/.
        precision: ONNX weight precision, "fp32" or "int4".
        gguf_types: GGUF files to write, from "f16" and "q8_0".
    Returns:
        The output folder.
    """
    from zerotune.models.loading import is_run_dir

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run_dir = Path(target)
    if not is_run_dir(run_dir):
        raise ExportError(f"{target}: not a zerotune run directory (no config.yaml)")
    out_dir = Path(out) if out else run_dir / "export" / fmt
    merged = _merged_for(run_dir, fmt, out_dir)
    if fmt == "onnx":
        from zerotune.export.onnx import export_onnx

        export_onnx(merged, out_dir, precision)
    elif fmt == "gguf":
        from zerotune.export.gguf import export_gguf

        export_gguf(merged, out_dir, gguf_types)
    from zerotune.export.grammar import write_grammars
    from zerotune.models.inference import run_schema

    write_grammars(run_schema(run_dir), out_dir)
    return out_dir
