"""GGUF export: a merged Llama- or Qwen2-style folder written as llama.cpp files (f16 and q8_0) with the
tokenizer and chat template inside, plus an Ollama Modelfile.

No package converts HF checkpoints to GGUF, so this is the llama-architecture part of llama.cpp's
convert_hf_to_gguf.py, written against the `gguf` package. Two details must match what readers undo:
- Llama's q_proj/k_proj rows are permuted from HF's rotate-half rotary layout to llama.cpp's
  interleaved one (transformers' LlamaTensorProcessor reverses exactly this on load). Qwen2 uses
  NeoX-style rotary in llama.cpp, so its weights are written as they are.
- Tensors are streamed: the header is written from shapes alone, then each tensor is read from the
  safetensors, converted and written, so memory holds one tensor, not the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from zerotune.export.gguf_vocab import gguf_vocab, write_vocab
from zerotune.export.ollama import write_modelfile
from zerotune.export.output import ExportError, architecture, read_manifest, staged_dir, write_manifest

# transformers class -> llama.cpp architecture
GGUF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
GGUF_TYPES = ("f16", "q8_0")
Q8_BLOCK = 32


def _config(merged_dir: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(merged_dir))
    except (OSError, ValueError) as err:
        raise ExportError(f"{merged_dir}: unreadable config.json ({err})") from None


def _rope(config) -> dict:
    """rope_theta and scaling, from transformers 5's rope_parameters or the older flat fields."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_supported(config, arch: str) -> None:
    if arch == "llama" and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        raise ExportError("GGUF export of Llama models with attention/MLP biases is not supported")
    if _rope(config)["rope_type"] not in ("default", "llama3", "linear"):
        raise ExportError(f"GGUF export does not support rope type {_rope(config)['rope_type']!r}")


def llama3_rope_factors(config) -> np.ndarray:
    """Per-frequency divisors for Llama 3 rope scaling, stored as rope_freqs.weight as llama.cpp does."""
    rope = _rope(config)
    dim, base, factor = _head_dim(config), rope["rope_theta"], rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _write_hparams(writer, config, name: str, file_type: int) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = _rope(config)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_rope_dimension_count(_head_dim(config))
    if _head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp interleaved order, per head (llama.cpp's LlamaModel.permute)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _safetensor_files(merged_dir: Path) -> list[Path]:
    index = merged_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [merged_dir / s for s in shards]
    files = sorted(merged_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{merged_dir}: no safetensors weights")
    return files


def _tensor_sources(merged_dir: Path, config, arch: str) -> list[tuple[str, Path, str]]:
    """(gguf name, safetensors file, HF name) for every tensor, in file order."""
    import gguf
    from safetensors import safe_open

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    sources = []
    for file in _safetensor_files(merged_dir):
        with safe_open(str(file), framework="pt") as f:
            for hf_name in f.keys():
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue  # recomputed from rope_theta by every runtime
                gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ExportError(f"{file.name}: tensor {hf_name} has no GGUF name for architecture {arch}")
                sources.append((gguf_name, file, hf_name))
    return sources


def _convert(array: np.ndarray, gguf_name: str, config, arch: str) -> np.ndarray:
    """The float32 tensor as llama.cpp lays it out."""
    if arch == "llama" and gguf_name.startswith("blk.") and ".attn_q." in gguf_name:
        return permute_rotary(array, config.num_attention_heads)
    if arch == "llama" and gguf_name.startswith("blk.") and ".attn_k." in gguf_name:
        return permute_rotary(array, config.num_key_value_heads)
    return array


def _qtype(shape: tuple[int, ...], kind: str):
    """The GGML type a tensor is stored as: 1-D (norms, biases) stay f32, as llama.cpp keeps them."""
    import gguf

    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32
    if kind == "q8_0" and shape[-1] % Q8_BLOCK == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # rows that do not fill whole q8_0 blocks, as llama.cpp falls back


def _plan(sources, config, arch: str, kind: str) -> list[tuple]:
    """(gguf name, shape, GGML type, source) per tensor; a source is (file, HF name) or an array."""
    import gguf
    from safetensors import safe_open

    plan = []
    for gguf_name, file, hf_name in sources:
        with safe_open(str(file), framework="pt") as f:  # reads the header only
            shape = tuple(f.get_slice(hf_name).get_shape())
        plan.append((gguf_name, shape, _qtype(shape, kind), (file, hf_name)))
    if arch == "llama" and _rope(config)["rope_type"] == "llama3":
        factors = llama3_rope_factors(config)
        plan.append(("rope_freqs.weight", factors.shape, gguf.GGMLQuantizationType.F32, factors))
    return plan


def _load(source, gguf_name: str, config, arch: str) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    from safetensors import safe_open

    file, hf_name = source
    with safe_open(str(file), framework="pt") as f:
        array = f.get_tensor(hf_name).float().numpy()
    return _convert(array, gguf_name, config, arch)


def _write_file(path: Path, config, arch: str, kind: str, vocab, sources, name: str) -> None:
    import gguf

    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer = gguf.GGUFWriter(str(path), arch)
    _write_hparams(writer, config, name, int(file_type))
    write_vocab(writer, vocab)
    plan = _plan(sources, config, arch, kind)
    for gguf_name, shape, qtype, _ in plan:
        nbytes = int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, qtype)))
        writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for gguf_name, _, qtype, source in plan:
            array = np.ascontiguousarray(_load(source, gguf_name, config, arch))
            writer.write_tensor_data(gguf.quants.quantize(array, qtype))
    finally:
        writer.close()


def export_gguf(merged_dir: str | Path, out: str | Path, types: tuple[str, ...] = GGUF_TYPES) -> list[Path]:
    """Write a merged Llama/Qwen2 folder as GGUF files plus an Ollama Modelfile.

    Args:
        merged_dir: a transformers folder (from export_merged; its zerotune.json supplies the system
            prompt and end-of-turn token when present).
        out: the folder to write (replaced whole if it is an earlier export).
        types: which files to write, from "f16" and "q8_0".
    Returns:
        The .gguf paths, in the order of `types`; out/Modelfile runs the q8_0 one (else the first).
    """
    from transformers import AutoTokenizer

    merged_dir, out, types = Path(merged_dir), Path(out), tuple(dict.fromkeys(types))
    bad = [t for t in types if t not in GGUF_TYPES] or ([] if types else ["(none)"])
    if bad:
        raise ExportError(f"GGUF type {bad[0]!r} is not one of {', '.join(GGUF_TYPES)}")
    hf_arch = architecture(merged_dir)
    if hf_arch not in GGUF_ARCHITECTURES:
        raise ExportError(f"GGUF export does not support architecture {hf_arch} "
                          f"(supported: {', '.join(sorted(GGUF_ARCHITECTURES))})")
    arch, config, manifest = GGUF_ARCHITECTURES[hf_arch], _config(merged_dir), read_manifest(merged_dir)
    _check_supported(config, arch)
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    vocab = gguf_vocab(tokenizer, config.vocab_size, manifest.get("end_of_turn"))
    sources = _tensor_sources(merged_dir, config, arch)
    name = manifest.get("base_model") or merged_dir.name
    files = [f"model-{kind}.gguf" for kind in types]
    with staged_dir(out) as tmp:
        for kind, file in zip(types, files):
            _write_file(tmp / file, config, arch, kind, vocab, sources, name)
        chosen = files[types.index("q8_0")] if "q8_0" in types else files[0]
        write_modelfile(tmp / "Modelfile", chosen, tokenizer, manifest, vocab.add_bos)
        write_manifest(tmp, {**manifest, "format": "gguf", "files": files, "merged_from": str(merged_dir.resolve())})
    return [out / f for f in files]
