"""ONNX export: a merged folder turned into an ONNX Runtime GenAI model (decoder with KV cache,
genai_config.json, tokenizer and chat template) by onnxruntime-genai's model builder, plus greedy
generation through onnxruntime_genai for checking and timing it.

The model builder is the maintained exporter for Llama/Qwen-style decoders; optimum's ONNX exporter
pins transformers<4.58 and cannot run next to transformers 5.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from zerotune.export.output import ExportError, architecture, read_manifest, staged_dir, write_manifest

PRECISIONS = ("fp32", "int4")

# The text-only causal LMs among the model builder's architectures (its dispatch list also holds
# vision, audio and MoE models that a zerotune run does not produce). Llama and Qwen2 are tested.
ONNX_ARCHITECTURES = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "GraniteForCausalLM", "OlmoForCausalLM", "SmolLM3ForCausalLM",
}

_MISSING = ("ONNX export needs onnxruntime-genai, onnx and onnx-ir: "
            "pip install onnxruntime-genai onnx onnx-ir")


def _require_builder() -> None:
    for module in ("onnxruntime_genai", "onnx", "onnx_ir"):
        if importlib.util.find_spec(module) is None:
            raise ExportError(_MISSING)


def _check_head_size(merged_dir: Path) -> None:
    # ONNX Runtime's CPU GroupQueryAttention kernel rejects other head sizes at the first token, long
    # after an export that looked fine; real models use 64 or 128.
    config = json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or config.get("hidden_size", 0) // heads
    if head_dim % 16:
        raise ExportError(f"{merged_dir}: head size {head_dim} is not a multiple of 16, which ONNX Runtime's "
                          "attention kernel requires")


def _run_builder(src: Path, dst: Path, precision: str) -> None:
    """Run the model builder in a child process.

    It puts its own folder on sys.path and imports top-level modules named `builders` and
    `quantization`, and prints per-tensor progress; a child keeps both out of this process.
    """
    cache = dst / ".builder-cache"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(dst),
           "-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", "hf_token=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (dst / "genai_config.json").is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ExportError(f"ONNX export of {src} failed (onnxruntime-genai model builder, exit "
                          f"{proc.returncode}):\n{tail}")


def export_onnx(merged_dir: str | Path, out: str | Path, precision: str = "fp32") -> Path:
    """Export a merged model folder to an ONNX Runtime GenAI model for CPU.

    Args:
        merged_dir: a transformers folder (from export_merged, or any supported model folder).
        out: the folder to write (replaced whole if it is an earlier export).
        precision: "fp32" (same outputs as PyTorch) or "int4" (block-quantised MatMuls, smaller and faster).
    Returns:
        out, holding model.onnx (+ .data), genai_config.json, tokenizer files, chat_template.jinja, zerotune.json.
    """
    merged_dir, out = Path(merged_dir), Path(out)
    if precision not in PRECISIONS:
        raise ExportError(f"ONNX precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    arch = architecture(merged_dir)
    if arch not in ONNX_ARCHITECTURES:
        raise ExportError(f"ONNX export does not support architecture {arch} "
                          f"(supported: {', '.join(sorted(ONNX_ARCHITECTURES))})")
    _check_head_size(merged_dir)
    _require_builder()
    with staged_dir(out) as tmp:
        _run_builder(merged_dir, tmp, precision)
        write_manifest(tmp, {**read_manifest(merged_dir), "format": "onnx", "precision": precision,
                             "merged_from": str(merged_dir.resolve())})
    return out


def stop_ids(onnx_dir: Path) -> set[int]:
    """The token ids genai_config.json ends generation on."""
    config = json.loads((Path(onnx_dir) / "genai_config.json").read_text(encoding="utf-8"))
    eos = config["model"].get("eos_token_id", [])
    return set(eos if isinstance(eos, list) else [eos])


def load_onnx(onnx_dir: str | Path, threads: int | None = None):
    """An onnxruntime_genai.Model for an exported folder (load once, generate many times).

    Args:
        onnx_dir: a folder written by export_onnx.
        threads: ONNX Runtime intra-op threads; None lets it take every core.
    Returns:
        The model.
    """
    import onnxruntime_genai as og

    config = og.Config(str(onnx_dir))
    if threads:
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return og.Model(config)


def generate_ids(model, prompts: list[list[int]], max_new_tokens: int, stops: set[int],
                 min_new_tokens: int = 0, grammars: list[str | None] | None = None) -> list[list[int]]:
    """Greedy continuations of token-id prompts, one sequence at a time.

    Args:
        model: from load_onnx.
        prompts: token ids per prompt.
        max_new_tokens: cap on new tokens.
        stops: ids that end a continuation (not included in it).
        min_new_tokens: generate at least this many (for timing equal lengths).
        grammars: per prompt, a Lark grammar (zerotune.export.grammar.lark) the answer must follow, or None;
            ONNX Runtime GenAI's guidance enforces it (it ends the answer where the grammar does).
    Returns:
        The new token ids per prompt, cut before the first stop id.
    """
    import onnxruntime_genai as og

    results = []
    for n, ids in enumerate(prompts):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens,
                                  min_length=len(ids) + min_new_tokens)
        if grammars and grammars[n]:
            params.set_guidance("lark_grammar", grammars[n])
        generator = og.Generator(model, params)
        generator.append_tokens(list(ids))
        new: list[int] = []
        while not generator.is_done() and len(new) < max_new_tokens:
            generator.generate_next_token()
            new.append(int(generator.get_next_tokens()[0]))
        cut = next((i for i, t in enumerate(new) if t in stops), len(new))
        results.append(new[:cut])
    return results


def onnx_generate(onnx_dir: str | Path, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers from an exported ONNX model.

    Args:
        onnx_dir: a folder written by export_onnx.
        prompts: texts to continue, already in the chat format if chat answers are wanted.
        max_new_tokens: cap on answer length.
    Returns:
        One decoded continuation per prompt (special tokens dropped).
    """
    from transformers import AutoTokenizer

    # The exported folder's tokenizer.json read by transformers: onnxruntime_genai's own decoder
    # stops at the first token that ends inside a UTF-8 character, cutting answers short.
    tokenizer = AutoTokenizer.from_pretrained(str(onnx_dir))
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    outputs = generate_ids(load_onnx(onnx_dir), prompt_ids, max_new_tokens, stop_ids(Path(onnx_dir)))
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
