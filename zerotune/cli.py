"""The `zerotune` command: a thin Typer app; every command calls the same-named API function.

User errors (bad data, config, model names, impossible plans) end as one `error:` message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

import zerotune
from zerotune.config import Config, ConfigError, dump_config, load_config, update
from zerotune.evaluate.fields import confusion_text

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune, evaluate, export and serve causal LMs on a free GPU or a plain CPU.")
config_app = typer.Typer(no_args_is_help=True, help="Show, validate or describe the config schema.")
app.add_typer(config_app, name="config")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the user asked for something impossible (not a bug)."""
    from zerotune.data.formats import DataError
    from zerotune.models.embedded import EmbeddedModelMissing
    from zerotune.models.loading import ModelLoadError
    from zerotune.models.targets import TargetError
    from zerotune.models.templates import TemplateError
    from zerotune.train.checkpoint import CheckpointError
    from zerotune.train.recipe import TrainError

    errors: list[type[BaseException]] = [ConfigError, DataError, EmbeddedModelMissing, ModelLoadError,
                                         TargetError, TemplateError, TrainError, CheckpointError]
    for module, name in (("zerotune.export", "ExportError"), ("zerotune.hardware", "HardwareError"),
                         ("zerotune.serve.app", "ServeError"), ("zerotune.serve.safety", "FilterProfileError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _config(path: Optional[Path], overrides: list[str]) -> Config:
    return load_config(path, [o for o in overrides if "=" in o] + _bad_args(overrides))


def _bad_args(args: list[str]) -> list[str]:
    bad = [a for a in args if "=" not in a]
    if bad:
        raise ConfigError(f"unexpected argument(s) {' '.join(bad)}: overrides are written key=value")
    return []


@config_app.command("show", context_settings=EXTRA)
def config_show(ctx: typer.Context, config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
    """Print the fully resolved config (defaults + file + key=value overrides)."""
    typer.echo(dump_config(_config(config, list(ctx.args))), nl=False)


@config_app.command("validate", context_settings=EXTRA)
def config_validate(ctx: typer.Context, config: Path = typer.Argument(..., help="YAML config file")) -> None:
    """Check a config file; errors name the file and key."""
    _config(config, list(ctx.args))
    typer.echo(f"{config}: ok")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the config."""
    typer.echo(json.dumps(Config.model_json_schema(), indent=2))


@app.command(context_settings=EXTRA)
def prepare(
    ctx: typer.Context,
    data: list[str] = typer.Argument(..., help="data files (JSONL, JSON, CSV)"),
    out: str = typer.Option(..., "--out", "-o", help="output folder"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    format_: Optional[str] = typer.Option(None, "--format", help="auto | io | alpaca | messages | sharegpt | csv"),
    model: Optional[str] = typer.Option(None, "--model", help="model whose tokenizer sets the token budget"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="keep going; bad rows go to rejects.jsonl"),
    templates: Optional[str] = typer.Option(None, "--templates", help="YAML spec of {slot} templates to fill"),
    token_budget: bool = typer.Option(True, "--token-budget/--no-token-budget",
                                      help="drop rows over data.max_seq_len tokens of the model's template"),
) -> None:
    """Validate, clean, dedup, scrub PII, augment and split data; writes a 3C quality report."""
    overrides = [d for d in data if "=" in d and not Path(d).exists()]  # key=value lands among the files
    data = [d for d in data if d not in overrides]
    cfg = _config(config, list(ctx.args) + overrides)
    cfg = update(cfg, model={"name": model})
    cfg = update(cfg, data={"prepare": {**cfg.data.prepare.model_dump(mode="json"),
                                        **{k: v for k, v in {"format": format_, "templates": templates}.items() if v},
                                        **({"skip_invalid": True} if skip_invalid else {})}})
    report = zerotune.prepare(data, out, cfg, token_budget=token_budget)
    typer.echo(_prepare_summary(report, out))


def _prepare_summary(report: dict, out: str) -> str:
    s = report["summary"]
    lines = [f"{s['rows_in']} input rows -> {s['train']} train + {s['eval']} eval ({s['augmented']} augmented), "
             f"{s['rejected']} left out" + (f" (reasons in {Path(out) / 'rejects.jsonl'})" if s["rejected"] else ""),
             f"report: {Path(out) / 'report.md'}"]
    from zerotune.data.report import slot_summary

    return "\n".join(lines[:1] + slot_summary(report) + lines[1:])


@app.command(context_settings=EXTRA)
def train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see configs/)"),
    data: Optional[str] = typer.Option(None, "--data", help="training data file or prepared folder"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="held-out data file"),
    model: Optional[str] = typer.Option(None, "--model", help="hub id, local folder or .gguf (default: embedded)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="run directory"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    method: Optional[str] = typer.Option(None, "--method", help="lora | qlora | dora | full"),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="score base vs tuned on the eval split"),
    restart: bool = typer.Option(False, "--restart", help="discard this run directory's checkpoints, start over"),
    init_adapter: Optional[str] = typer.Option(None, "--init-adapter", help="continue this run's adapter (RUN_DIR or "
                                               "adapter folder); data.replay=R mixes R old rows per new row"),
) -> None:
    """Fine-tune a model (LoRA by default) and write a run directory. Extra key=value args override config."""
    cfg = _config(config, list(ctx.args))
    cfg = update(cfg, model={"name": model}, data={"train": data, "eval": eval_data},
                 train={"output": output, "epochs": epochs, "max_steps": max_steps, "init_adapter": init_adapter},
                 lora={"method": method})
    from zerotune.train.recipe import Interrupted

    try:
        result = zerotune.train(cfg, compare=compare, restart=restart)
    except Interrupted as stop:
        typer.echo(str(stop), err=True)
        raise typer.Exit(stop.exit_code) from None
    if result["is_main"]:  # the other processes of an accelerate run print nothing
        _print_train_summary(result)


def _print_train_summary(result: dict) -> None:
    typer.echo(f"\ntrained {result['steps']} steps in {result['seconds']:.0f} s; final loss {result['final_loss']:.4f}"
               + (f", eval loss {result['eval_loss']:.4f}" if result["eval_loss"] is not None else ""))
    comp = result["comparison"]
    if comp:
        typer.echo(_comparison_table(comp))
    typer.echo(f"run directory: {result['run_dir']}")
    if comp:
        typer.echo(f"report:        {Path(result['run_dir']) / 'eval' / 'report.html'}")


def _comparison_table(results: dict) -> str:
    keys = ("exact_match", "json_match", "field_match", "bleu4", "rouge_l", "chrf", "perturbed_score",
            "robustness", "tokens_per_second")
    tuned, base = results["tuned"], results.get("base")
    head = f"{'metric':<18}" + (f"{'base':>10}" if base else "") + f"{'tuned':>10}"
    lines = [head, "-" * len(head)]
    for k in keys:
        if k in tuned:
            fmt = "{:>10.1f}" if k == "tokens_per_second" else "{:>10.3f}"
            lines.append(f"{k:<18}" + (fmt.format(base[k]) if base else "") + fmt.format(tuned[k]))
    lines.append(f"{'n':<18}" + (f"{base['n']:>10}" if base else "") + f"{tuned['n']:>10}")
    fields = (results.get("fields") or {}).get("tuned")
    if fields:
        lines.append("fields (tuned): " + ", ".join(f"{k} {s['accuracy']:.2f}" for k, s in fields.items()))
        name, worst = max(fields.items(), key=lambda kv: kv[1]["wrong"])
        if worst["wrong"]:
            lines.append(f"most misses: {name}, {worst['wrong']} of {worst['rows']} "
                         f"({confusion_text(worst['confusions'][:3])}; all in eval/report.md)")
    if tuned.get("decoding") == "schema":
        lines.append("decoding: kept to the answer schema of the training data (generate.constrain=off: free)")
    passed = results.get("passed", {})
    if passed:
        lines.append("thresholds: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in passed.items()))
    return "\n".join(lines)


@app.command("eval")
def eval_(
    target: str = typer.Argument(..., help="RUN_DIR or model"),
    data: str = typer.Option(..., "--data", help="test file"),
    out: Optional[str] = typer.Option(None, "--out", help="folder for eval/ (default: the run directory)"),
    compare_base: bool = typer.Option(False, "--compare-base", help="score the base model beside the tuned one"),
    robustness: bool = typer.Option(True, "--robustness/--no-robustness"),
    limit: Optional[int] = typer.Option(None, "--limit", help="first N rows only"),
    fail_under: bool = typer.Option(False, "--fail-under", help="exit 1 when a threshold is missed"),
) -> None:
    """Score a run or model on a test set: exact match, BLEU-4, ROUGE-L, chrF, speed, robustness."""
    results = zerotune.evaluate(target, data, out=out, compare_base=compare_base, robustness=robustness,
                                limit=limit)
    typer.echo(_comparison_table(results))
    if fail_under and not all(results["passed"].values()):
        raise typer.Exit(1)


@app.command()
def generate(
    target: Optional[str] = typer.Argument(None, help="RUN_DIR or model (default: embedded)"),
    prompt: str = typer.Argument(..., help="the user message"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    filter_: Optional[str] = typer.Option(None, "--filter", help="content filter profile or off (default: pii)"),
    free: bool = typer.Option(False, "--free", help="decode freely even where the run's answers have a schema"),
) -> None:
    """Answer one prompt."""
    from zerotune.data.tokenize import with_system
    from zerotune.models.generate import generate_batch
    from zerotune.models.inference import constraint_for, load_target

    loaded = load_target(target)
    conv = with_system([{"role": "user", "content": prompt}], loaded.system_prompt)
    gen = generate_batch(loaded.model, loaded.tokenizer, loaded.fmt, [conv], max_new_tokens=max_new_tokens,
                         temperature=temperature, constraint=constraint_for(loaded, _constrain(target, free)))[0]
    content_filter = _output_filter(target, filter_)
    typer.echo(content_filter.filter_text(gen.text, "cli").text if content_filter else gen.text)


@app.command()
def chat(
    target: Optional[str] = typer.Argument(None, help="RUN_DIR or model (default: embedded)"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    filter_: Optional[str] = typer.Option(None, "--filter", help="content filter profile or off (default: pii)"),
    free: bool = typer.Option(False, "--free", help="decode freely even where the run's answers have a schema"),
) -> None:
    """Talk to a model in the terminal (streamed; /reset clears history, /exit or Ctrl-D quits)."""
    from zerotune.data.tokenize import with_system
    from zerotune.models.generate import stream
    from zerotune.models.inference import constraint_for, load_target

    loaded = load_target(target)
    constraint = constraint_for(loaded, _constrain(target, free))
    content_filter = _output_filter(target, filter_)
    history: list[dict] = []
    typer.echo(f"chatting with {loaded.name} — /reset, /exit")
    for line in _lines():
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if text == "/reset" or not text:
            history = [] if text else history
            continue
        history.append({"role": "user", "content": text})
        pieces = []
        typer.echo("model> ", nl=False)
        guard = content_filter.stream("chat") if content_filter else None
        for piece in stream(loaded.model, loaded.tokenizer, loaded.fmt, with_system(history, loaded.system_prompt),
                            max_new_tokens=max_new_tokens, temperature=temperature, constraint=constraint):
            pieces.append(piece)
            typer.echo(guard.feed(piece) if guard else piece, nl=False)
        typer.echo((guard.finish() if guard else "") + ("  [blocked by the content filter]" if guard and
                                                         guard.blocked else ""))
        history.append({"role": "assistant", "content": "".join(pieces).strip()})


@app.command()
def serve(
    target: Optional[str] = typer.Argument(None, help="RUN_DIR or model (default: embedded)"),
    host: Optional[str] = typer.Option(None, "--host", help="interface to bind (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="port (default 8000; 0 = any free port)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer key clients must send "
                                          "(or $ZEROTUNE_API_KEY)"),
    filter_: Optional[str] = typer.Option(None, "--filter", help="content filter: pii | seed | strict | FILE.yaml "
                                          "| off"),
    audit_log: Optional[str] = typer.Option(None, "--audit-log", help="JSONL file of filter events"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
) -> None:
    """Serve a run or model over an OpenAI-compatible HTTP API with a content filter."""
    from zerotune.models.inference import read_run_config
    from zerotune.models.loading import is_run_dir

    cfg = read_run_config(Path(target)) if target and is_run_dir(target) else Config()
    cfg = update(cfg, serve={"host": host, "port": port, "audit_log": audit_log, "filter": filter_})
    zerotune.serve(target, config=cfg, api_key=api_key, trust_remote_code=trust_remote_code)


def _constrain(target: Optional[str], free: bool) -> str:
    """generate.constrain for generate/chat: off with --free, else the run's own setting."""
    from zerotune.models.inference import read_run_config
    from zerotune.models.loading import is_run_dir

    if free:
        return "off"
    return read_run_config(Path(target)).generate.constrain if target and is_run_dir(target) else "auto"


def _output_filter(target: Optional[str], profile: Optional[str]):
    """The content filter for generate/chat output (the serve profile of the run, unless told)."""
    from zerotune.models.inference import read_run_config
    from zerotune.models.loading import is_run_dir
    from zerotune.serve.app import audit_path
    from zerotune.serve.safety import ContentFilter

    cfg = read_run_config(Path(target)) if target and is_run_dir(target) else Config()
    if profile is not None:
        cfg = update(cfg, serve={"filter": profile})
    return ContentFilter.from_profile(cfg.serve.filter, audit_log=audit_path(target, cfg.serve),
                                      hold_back=cfg.serve.hold_back)


@app.command()
def export(
    target: str = typer.Argument(..., help="RUN_DIR"),
    format_: str = typer.Option(..., "--format", "-f", help="merged | onnx | gguf"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default RUN_DIR/export/FORMAT)"),
    precision: str = typer.Option("fp32", "--precision", help="onnx: fp32 | int4"),
    gguf_types: str = typer.Option("f16,q8_0", "--gguf-types", help="gguf: comma-separated f16,q8_0"),
) -> None:
    """Export a run: merged safetensors, ONNX Runtime (with KV cache) or GGUF (+ Ollama Modelfile)."""
    path = zerotune.export(target, format_, out, precision=precision,
                   gguf_types=tuple(t.strip() for t in gguf_types.split(",") if t.strip()))
    typer.echo(f"exported {format_} to {path}")
    grammars = sorted(p.name for p in Path(path).glob("answer.*"))
    if grammars:
        typer.echo("answer schema for other runtimes (decode as `zerotune eval` scored): " + ", ".join(grammars)
                   + " (llama.cpp --grammar-file answer.gbnf; Ollama format: answer.schema.json; ONNX Runtime "
                   "GenAI set_guidance('lark_grammar', ...); per question: zerotune.export.grammar)")


@app.command()
def plan(
    model: Optional[str] = typer.Option(None, "--model", help="hub id, folder, config.json, .gguf (default: embedded)"),
    gpu: str = typer.Option("auto", "--gpu", help="t4 | v100 | a100 | a100-80 | l4 | h100 | h200 | cpu | auto"),
    seq_len: int = typer.Option(1024, "--seq-len"),
    method: str = typer.Option("lora", "--method", help="lora | qlora | dora | full"),
    r: int = typer.Option(16, "--r", help="LoRA rank"),
    targets: str = typer.Option("all-linear", "--targets", help="attention | all-linear | comma-separated names"),
    batch_size: int = typer.Option(8, "--batch-size", help="effective batch (examples per optimizer step)"),
) -> None:
    """Say whether a model fits a GPU or this CPU, and with which settings, before loading anything."""
    result = zerotune.plan(model, device=gpu, seq_len=seq_len, method=method, r=r, targets=targets,
                           batch_size=batch_size)
    typer.echo(result.render())
    if not result.fits:
        raise typer.Exit(1)


def _lines():
    """User lines from a terminal prompt or a pipe, until end of input."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            return


def run(argv: list[str] | None = None) -> None:
    """Console entry point."""
    sys.exit(main(argv))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with argv; returns the exit status."""
    try:
        code = app(args=argv if argv is not None else sys.argv[1:], prog_name="zerotune", standalone_mode=False)
        if isinstance(code, int):  # typer.Exit(n) comes back as a return value without standalone mode
            return code
    except _user_errors() as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except typer.Exit as ex:
        return ex.exit_code
    except (EOFError, KeyboardInterrupt):
        return 130
    except Exception as err:  # click's usage errors
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        if isinstance(err, click.exceptions.Abort):
            return 130
        raise
    return 0
