"""zerotune: fine-tune a causal LM on one free GPU or a plain CPU, then evaluate, export and serve it.

Public API (each function is what the same-named CLI command calls):
load_config, prepare, train, evaluate, export, serve, plan.
Heavy modules (torch, transformers) are imported inside the functions, so `import zerotune` is cheap.
"""

from __future__ import annotations

from pathlib import Path

# The stage packages share names with the API functions below. Importing a submodule for the first
# time binds it as an attribute of its parent package, which would overwrite e.g. the function
# `zerotune.train` with the package `zerotune.train`. Loading the (light, import-free) stage packages
# here first, before the functions are defined, makes later submodule imports leave the names alone.
from zerotune import evaluate as _evaluate_pkg, export as _export_pkg, serve as _serve_pkg  # noqa: F401
from zerotune import train as _train_pkg  # noqa: F401
from zerotune.config import Config, load_config

__all__ = ["Config", "load_config", "prepare", "train", "evaluate", "export", "serve", "plan"]
__version__ = "0.1.0"


def prepare(paths: list[str], out: str, cfg: Config | None = None, *, token_budget: bool = True,
            progress: bool = True, **kwargs) -> dict:
    """Validate, clean, dedup, augment and split data files into out/ (train.jsonl, eval.jsonl, report).

    Args:
        paths: data files.
        out: output folder.
        cfg: config (data.prepare, data.max_seq_len, model for the token budget); defaults when None.
        token_budget: drop/truncate rows over data.max_seq_len tokens of cfg.model's tokenizer and template.
        progress: progress bars.
        kwargs: passed to zerotune.data.prepare.prepare (translator, template_spec...).
    Returns:
        The quality report as a dict.
    """
    from zerotune.data.prepare import prepare as _prepare

    cfg = cfg or Config()
    if token_budget:
        kwargs.setdefault("count_tokens", _token_counter(cfg))
        kwargs.setdefault("max_tokens", cfg.data.max_seq_len)
    return _prepare(list(paths), out, cfg.data.prepare, eval_fraction=cfg.data.eval_fraction, seed=cfg.train.seed,
                    progress=progress, **kwargs)


def _token_counter(cfg: Config):
    """Tokens of a conversation as training will see it: the model's tokenizer and chat template."""
    from zerotune.data.tokenize import with_system
    from zerotune.models.loading import load_tokenizer, resolve_source
    from zerotune.models.templates import render, resolve_format

    source = resolve_source(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    fmt = resolve_format(tokenizer, cfg.model.chat_template, cfg.model.name or source.path)

    def count(messages: list[dict]) -> int:
        text = render(tokenizer, fmt, with_system(messages, cfg.model.system_prompt), add_generation_prompt=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def train(cfg: Config, *, progress: bool = True, compare: bool = True, restart: bool = False) -> dict:
    """Fine-tune per cfg, then (compare=True) score base vs tuned on the run's eval split.

    Args:
        cfg: the resolved config.
        progress: progress bars.
        compare: run the closing base-vs-tuned comparison (writes RUN_DIR/eval/).
        restart: discard the run directory's checkpoints instead of resuming from them.
    Returns:
        {"run_dir", "steps", "final_loss", "eval_loss", "seconds", "comparison"}.
    """
    from zerotune.train.recipe import train as _train

    result = _train(cfg, progress=progress, restart=restart)
    out = {"run_dir": result.run_dir, "steps": result.steps, "final_loss": result.final_loss,
           "eval_loss": result.eval_loss, "seconds": result.seconds, "comparison": None,
           "is_main": result.is_main}
    eval_file = result.run_dir / "data" / "eval.jsonl"
    if compare and result.is_main and eval_file.is_file() and eval_file.stat().st_size > 0:
        out["comparison"] = evaluate(str(result.run_dir), str(eval_file), compare_base=True, robustness=False,
                                     progress=progress)
    return out


def evaluate(target: str, data: str, *, out: str | None = None, compare_base: bool = False,
             robustness: bool = True, limit: int | None = None, cfg: Config | None = None,
             progress: bool = True) -> dict:
    """Score a run directory or model on a test file and write the eval report.

    Args:
        target: RUN_DIR, model path/id, or "" / None for the embedded default.
        data: test file.
        out: folder for eval/ (default: the run directory, else ./eval-<name>).
        compare_base: also score the run's base model (adapter off).
        robustness: also score perturbed inputs.
        limit: evaluate only the first N rows.
        cfg: config for thresholds/generation (default: the run's own config.yaml, else defaults).
        progress: progress bars.
    Returns:
        {"tuned": {...}, "base": {...}?, "passed": {...}}.
    """
    from zerotune.evaluate.run import evaluate_loaded, load_rows
    from zerotune.models.inference import load_target, read_run_config
    from zerotune.models.loading import is_run_dir

    run = target and is_run_dir(target)
    if cfg is None:
        cfg = read_run_config(Path(target)) if run else Config()
    rows = load_rows(data, limit=limit)
    loaded = load_target(target or None)
    out_dir = Path(out) if out else (Path(target) if run else Path("eval-" + Path(target or "embedded").name))
    return evaluate_loaded(loaded, rows, cfg, out_dir=out_dir, compare_base=compare_base,
                           robustness=robustness, progress=progress)


def export(target: str, fmt: str, out: str | None = None, **kwargs) -> Path:
    """Export a run as merged safetensors, ONNX Runtime or GGUF; returns the output folder.

    Args:
        target: RUN_DIR.
        fmt: "merged", "onnx" or "gguf".
        out: output folder (default RUN_DIR/export/FORMAT).
        kwargs: precision="fp32"|"int4" (onnx), gguf_types=("f16", "q8_0") (gguf).
    """
    from zerotune.export import export as _export

    return _export(target, fmt, out, **kwargs)


def serve(target: str | None = None, **kwargs) -> None:
    """Serve a run or model over an OpenAI-compatible HTTP API (blocks until stopped)."""
    from zerotune.serve.app import serve as _serve

    _serve(target, **kwargs)


def plan(model: str | None, **kwargs):
    """Whether (and how) a model fits a device, from its config alone (no weights are read).

    Args:
        model: hub id, local folder, config.json, .gguf, a shipped config name, or None (embedded default).
        kwargs: passed to zerotune.hardware.plan (device, seq_len, method, r, targets, batch_size...).
    Returns:
        The Plan (render() gives the table the CLI prints).
    """
    from zerotune import hardware
    from zerotune.models.embedded import gguf_path

    source = str(gguf_path()) if model is None else model
    return hardware.plan(hardware.load_model_config(source), model_name=model or "SmolLM2-135M-Instruct", **kwargs)
