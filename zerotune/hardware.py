"""Device detection, GPU profiles, the memory estimate and the training plan built from them.

A plan needs a model's config.json only (no weights), so `zerotune plan` answers for a 7B model on a
laptop and `train` can refuse an impossible run before loading anything.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

GiB = 2**30
PRECISIONS = ("fp32", "bf16", "fp16")
# usable_bytes: the card's memory as nvidia-smi / torch report it (MiB x 2**20).
GPU_PROFILES: dict[str, dict] = {
    "t4": dict(name="Tesla T4 (free Colab)", usable_bytes=15_360 * 2**20, sm="7.5", bf16=False, tflops=65),
    "v100": dict(name="Tesla V100 16GB", usable_bytes=16_160 * 2**20, sm="7.0", bf16=False, tflops=125),
    "a100": dict(name="A100 40GB", usable_bytes=40_960 * 2**20, sm="8.0", bf16=True, tflops=312),
    "a100-80": dict(name="A100 80GB", usable_bytes=81_920 * 2**20, sm="8.0", bf16=True, tflops=312),
    "l4": dict(name="NVIDIA L4", usable_bytes=23_034 * 2**20, sm="8.9", bf16=True, tflops=121),
    "h100": dict(name="H100 80GB", usable_bytes=81_559 * 2**20, sm="9.0", bf16=True, tflops=989),
    "h200": dict(name="H200 141GB", usable_bytes=143_771 * 2**20, sm="9.0", bf16=True, tflops=989),
    "k80": dict(name="Tesla K80", usable_bytes=11_441 * 2**20, sm="3.7", bf16=False, tflops=8, obsolete=(
        "the Tesla K80 (Kepler, compute capability 3.7) is obsolete: current PyTorch CUDA builds need "
        "compute capability 5.0 or newer and Colab no longer offers it; plan for --gpu t4 (free Colab) "
        "or --gpu cpu instead")),
}
# Memory held before any tensor: the CUDA context, or python+torch+transformers+peft on CPU
# (measured 412 MB RSS after those imports, Linux x86-64, torch 2.13).
CUDA_OVERHEAD, CPU_OVERHEAD = 512 * 2**20, 400 * 2**20
MISC_BYTES = 16 * 2**20  # autograd graph, optimizer bookkeeping (measured 13 MB)
# Share of memory a plan may fill: the CUDA caching allocator fragments; a CPU shares RAM with the OS.
GPU_USABLE_FRACTION, CPU_USABLE_FRACTION = 0.95, 0.85
NF4_BYTES = 4.127 / 8  # NF4 + double-quantized absmax constants (blocksize 64): 4.127 bits/param
LOGITS_CHUNK_TOKENS = 1024
# Fitted on CPU fp32 (Llama + peft LoRA all-linear, one AdamW step; RSS over sweeps of seq len,
# layers, hidden, kv heads, intermediate, vocab, with tune_cpu_allocator): a layer keeps
# 4.3*h + 2*q_dim + k_dim + v_dim + 4*intermediate values per token, the model outside the layers
# 3*h, and the loss holds 4 fp32 copies of [tokens x vocab] at its peak. Half precision halves the
# values (not the loss copies, which transformers upcasts).
ACT_HIDDEN, ACT_Q, ACT_MLP, ACT_OUTSIDE, LOGITS_COPIES = 4.3, 2.0, 4.0, 3.0, 4
DROPOUT_FACTOR = 1.1  # LoRA dropout keeps a copy + a bool mask of each targeted input (+10% measured)
ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"}
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "models"


class HardwareError(ValueError):
    """A hardware request or model config the planner cannot use; the message says what to do."""


@dataclass(frozen=True)
class DeviceInfo:
    """What the planner needs to know about one device."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    total_memory_bytes: int
    bf16_supported: bool
    bf16_fast: bool
    fp16_fast: bool
    capability: str  # CPU ISA ("AVX2", "AVX512", "AMX") or CUDA sm ("8.0")
    cores: int
    gpu_profile: str | None = None


def _cpuinfo(key: str, path: str = "/proc/cpuinfo") -> str:
    """The first `key : value` of /proc/cpuinfo ("" when absent, e.g. on macOS or Windows)."""
    try:
        match = re.search(rf"^{key}\s*:\s*(.*)$", Path(path).read_text(errors="replace"), re.MULTILINE)
    except OSError:
        return ""
    return match.group(1).strip() if match else ""


def system_memory_bytes() -> int:
    """Total RAM from /proc/meminfo (no psutil), else sysconf, else 8 GiB."""
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 8 * GiB


def cpu_device(flags: set[str] | None = None, capability: str | None = None) -> DeviceInfo:
    """Describe this machine's CPU.

    Args:
        flags: CPU flags; read from /proc/cpuinfo when None.
        capability: torch's ISA name ("AVX2", "AVX512", "AMX"); asked from torch when None.
    Returns:
        A DeviceInfo of kind "cpu".
    """
    flags = set(_cpuinfo("(?:flags|Features)").split()) if flags is None else flags
    if capability is None:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    # Without AMX or AVX512-BF16 torch emulates bf16 matmuls: ~40x slower than fp32 on an AVX2 EPYC.
    fast = bool({"amx_bf16", "avx512_bf16"} & flags) or capability.upper().startswith("AMX")
    return DeviceInfo(kind="cpu", name=_cpuinfo("model name") or "CPU", total_memory_bytes=system_memory_bytes(),
                      bf16_supported=True, bf16_fast=fast, fp16_fast=False, capability=capability,
                      cores=os.cpu_count() or 1, gpu_profile="cpu")


def detect_device() -> DeviceInfo:
    """Detect the device training would run on: CUDA GPU 0, else Apple MPS, else the CPU.

    Returns:
        A frozen DeviceInfo.
    """
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        name, memory = p.name.lower(), int(p.total_memory)
        profile = next((k for k in ("h200", "h100", "a100", "l4", "v100", "t4", "k80") if k in name), None)
        profile = "a100-80" if profile == "a100" and memory > 48 * GiB else profile
        return DeviceInfo(kind="cuda", name=p.name, total_memory_bytes=memory, bf16_supported=p.major >= 8,
                          bf16_fast=p.major >= 8, fp16_fast=p.major >= 7, capability=f"{p.major}.{p.minor}",
                          cores=p.multi_processor_count, gpu_profile=profile)
    if torch.backends.mps.is_available():  # unified memory: the GPU may use most of system RAM
        return DeviceInfo(kind="mps", name="Apple MPS", total_memory_bytes=system_memory_bytes(),
                          bf16_supported=True, bf16_fast=False, fp16_fast=True, capability="mps",
                          cores=os.cpu_count() or 1)
    return cpu_device()


def device_for_profile(name: str) -> DeviceInfo:
    """A DeviceInfo for a named profile: t4, v100, a100, a100-80, l4, h100, h200 or cpu (this CPU)."""
    key = name.lower().strip()
    if key == "cpu":
        return cpu_device()
    if key not in GPU_PROFILES:
        raise HardwareError(f"unknown --gpu {name!r}: choose one of {', '.join([*GPU_PROFILES, 'cpu'])}")
    prof = GPU_PROFILES[key]
    if "obsolete" in prof:
        raise HardwareError(prof["obsolete"])
    return DeviceInfo(kind="cuda", name=prof["name"], total_memory_bytes=prof["usable_bytes"],
                      bf16_supported=prof["bf16"], bf16_fast=prof["bf16"], fp16_fast=True,
                      capability=prof["sm"], cores=0, gpu_profile=key)


def choose_precision(device: DeviceInfo, requested: str = "auto") -> str:
    """Resolve the training precision: explicit choices are kept, "auto" picks the fast one.

    Args:
        device: from detect_device() or device_for_profile().
        requested: "auto" | "fp32" | "bf16" | "fp16".
    Returns:
        "fp32", "bf16" or "fp16".
    """
    if requested in PRECISIONS:
        return requested
    if requested != "auto":
        raise ValueError(f"precision {requested!r}: choose auto, fp32, bf16 or fp16")
    if device.bf16_fast:
        return "bf16"
    return "fp16" if device.fp16_fast and device.kind != "cpu" else "fp32"


def precision_warning(device: DeviceInfo, chosen: str) -> str | None:
    """A warning when the chosen precision is slow or unsupported on the device, else None."""
    if chosen == "bf16" and not device.bf16_supported:
        return f"bf16 is not supported on {device.name} (sm {device.capability}); use fp16 or precision=auto"
    if chosen == "bf16" and device.kind == "cpu" and not device.bf16_fast:
        return (f"bf16 on this CPU ({device.capability}, no AMX/AVX512-BF16) is emulated and about 40x "
                "slower than fp32; precision=auto picks fp32")
    if chosen == "fp16" and device.kind == "cpu":
        return "fp16 on a CPU is slow and unstable for training; precision=auto picks fp32"
    if chosen == "fp32" and device.kind == "cuda":
        return f"fp32 on {device.name} doubles weight memory and is slower; precision=auto picks 16 bit"
    return None


def tune_cpu_allocator(threshold_bytes: int = 128 * 1024) -> bool:
    """Make glibc hand freed tensor memory back at once; call before CPU training.

    glibc raises its mmap threshold after each large free, so MB-sized activations stay on the heap:
    peak RSS measured 5-15% (up to 70%) above the live tensors the plan estimates.

    Returns:
        True when applied (glibc present), else False.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold_bytes)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _lin(name: str, n_in: int, n_out: int, count: int, group: str, bias: bool = False) -> dict:
    return dict(name=name, in_features=n_in, out_features=n_out, count=count, group=group, bias=bias)


def _attention(cfg: dict, h: int, heads: int, n: int) -> list[dict]:
    if cfg.get("kv_lora_rank") is not None:  # DeepSeek V2/V3 multi-head latent attention
        nope, rope, v, kv_rank, q_rank = (cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"],
                                          cfg["kv_lora_rank"], cfg.get("q_lora_rank"))
        q = ([_lin("q_a_proj", h, q_rank, n, "attention"), _lin("q_b_proj", q_rank, heads * (nope + rope), n,
                                                                  "attention")]
             if q_rank else [_lin("q_proj", h, heads * (nope + rope), n, "attention")])
        return q + [_lin("kv_a_proj_with_mqa", h, kv_rank + rope, n, "attention"),
                    _lin("kv_b_proj", kv_rank, heads * (nope + v), n, "attention"),
                    _lin("o_proj", heads * v, h, n, "attention")]
    bias = bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2"))
    head_dim = cfg.get("head_dim") or h // heads
    kv = (cfg.get("num_key_value_heads") or heads) * head_dim
    return [_lin("q_proj", h, heads * head_dim, n, "attention", bias), _lin("k_proj", h, kv, n, "attention", bias),
            _lin("v_proj", h, kv, n, "attention", bias), _lin("o_proj", heads * head_dim, h, n, "attention")]


def _mlp(h: int, inter: int, count: int, group: str) -> list[dict]:
    return [_lin("gate_proj", h, inter, count, group), _lin("up_proj", h, inter, count, group),
            _lin("down_proj", inter, h, count, group)]


def _moe_flags(cfg: dict) -> list[bool]:
    first, freq = cfg.get("first_k_dense_replace", 0), cfg.get("moe_layer_freq") or 1
    moe = bool(cfg.get("n_routed_experts"))
    return [moe and i >= first and i % freq == 0 for i in range(cfg["num_hidden_layers"])]


def count_params(model_config: dict) -> dict:
    """Count parameters from an HF config.json dict (llama, qwen2, mistral, deepseek_v2/v3).

    Args:
        model_config: the parsed config.json.
    Returns:
        dict: total, embedding, lm_head, norms, linear, expert, layers, moe_layers, and `linears`:
        one entry per linear kind (name, in_features, out_features, count over the model, group,
        bias). Group "expert" (routed experts) are fused 3D tensors in transformers: bitsandbytes
        does not quantize them and they are no nn.Linear LoRA target.
    """
    c = model_config
    try:
        h, layers, heads, vocab = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["vocab_size"]
    except KeyError as err:
        raise HardwareError(f"model config has no {err.args[0]!r}: not a decoder LM config.json") from None
    n_moe = sum(_moe_flags(c))
    linears = _attention(c, h, heads, layers) + _mlp(h, c.get("intermediate_size") or 4 * h, layers - n_moe, "mlp")
    if n_moe:
        experts, shared, moe_i = c["n_routed_experts"], c.get("n_shared_experts") or 0, c["moe_intermediate_size"]
        linears += _mlp(h, moe_i, n_moe * experts, "expert") + _mlp(h, moe_i * shared, n_moe * bool(shared),
                                                                      "shared_expert")
        linears.append(_lin("gate", h, experts, n_moe, "router"))
    linears = [x for x in linears if x["count"]]
    norms = layers * (2 * h + (c.get("kv_lora_rank") or 0) + (c.get("q_lora_rank") or 0)) + h
    embedding = vocab * h
    lm_head = 0 if c.get("tie_word_embeddings", False) else embedding
    linear = sum(x["count"] * (x["in_features"] + x["bias"]) * x["out_features"] for x in linears)
    expert = sum(x["count"] * x["in_features"] * x["out_features"] for x in linears if x["group"] == "expert")
    return dict(total=embedding + lm_head + norms + linear, embedding=embedding, lm_head=lm_head, norms=norms,
                linear=linear, expert=expert, layers=layers, moe_layers=n_moe, linears=linears)


def lora_targets(counts: dict, targets: str | list[str]) -> list[dict]:
    """The nn.Linear kinds (from count_params) that targets 'all-linear' | 'attention' | names adapt."""
    adaptable = [x for x in counts["linears"] if x["group"] not in ("expert", "router")]
    presets = {"all-linear": {x["name"] for x in adaptable}, "attention": ATTENTION_NAMES}
    names = presets.get(targets, {targets}) if isinstance(targets, str) else set(targets)
    return [x for x in adaptable if x["name"] in names]


def _layer_values(cfg: dict, counts: dict, moe: bool) -> float:
    """Values one layer keeps per token for backward without checkpointing (see ACT_* above)."""
    attn = {x["name"]: x["out_features"] for x in counts["linears"] if x["group"] == "attention"}
    h = cfg["hidden_size"]
    if "kv_b_proj" in attn:  # MLA: the latent kv (normed) and the expanded per-head k, v
        q_dim, kv = attn.get("q_proj") or attn["q_b_proj"], attn["kv_b_proj"] + 2 * attn["kv_a_proj_with_mqa"]
    else:
        q_dim, kv = attn["q_proj"], 2 * attn["k_proj"]
    values = ACT_HIDDEN * h + ACT_Q * q_dim + kv
    if not moe:
        return values + ACT_MLP * (cfg.get("intermediate_size") or 4 * h)
    k, shared = cfg.get("num_experts_per_tok", 1), cfg.get("n_shared_experts") or 0
    # each routed copy of a token also keeps its gathered input and weighted output (2*h)
    return values + ACT_MLP * cfg["moe_intermediate_size"] * (k + shared) + 2 * k * h + cfg["n_routed_experts"]


def memory_estimate(cfg: dict, *, tokens: int, act_bytes: int, checkpointing: bool, dropout_values: float = 0.0,
                    logits_chunk_tokens: int | None = LOGITS_CHUNK_TOKENS) -> tuple[int, int]:
    """(activation bytes, logits/loss bytes) at the peak of one forward+backward over `tokens` tokens."""
    counts = count_params(cfg)
    per_layer = [_layer_values(cfg, counts, moe) + dropout_values for moe in _moe_flags(cfg)]
    outside = ACT_OUTSIDE * cfg["hidden_size"] * tokens * act_bytes
    logits = LOGITS_COPIES * 4 * min(tokens, logits_chunk_tokens or tokens) * cfg["vocab_size"]
    if not checkpointing:  # the loss peaks while every layer still holds its activations
        return int(sum(per_layer) * tokens * act_bytes + outside), int(logits)
    saved = len(per_layer) * cfg["hidden_size"] * tokens * act_bytes  # each layer's input
    # backward recomputes one layer at a time, after the loss has freed its buffers
    recompute = max(per_layer) * tokens * act_bytes
    return int(saved + outside + max(0, recompute - logits)), int(logits)


@dataclass
class Plan:
    """A training plan: chosen settings and the memory they need, all sizes in bytes."""

    model: str
    device: str
    device_kind: str
    device_memory_bytes: int
    budget_bytes: int  # the share of device memory the plan may fill
    params_total: int
    params_trainable: int
    method: str  # lora | qlora | dora | full
    precision: str  # fp32 | bf16 | fp16: the compute (autocast) dtype
    weight_dtype: str  # dtype to load the frozen base in: fp32 | bf16 | fp16 | nf4 (4-bit linears)
    seq_len: int
    batch_size: int  # rows per optimizer step
    micro_batch: int  # rows per forward/backward
    grad_accum: int
    gradient_checkpointing: bool
    max_seq_len: int  # the longest row that fits at micro-batch 1 with these settings
    weights_bytes: int
    trainable_bytes: int  # trainable weights + grads + AdamW states
    activations_bytes: int
    logits_bytes: int
    overhead_bytes: int
    fits: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Estimated peak memory of one micro-batch step."""
        return (self.weights_bytes + self.trainable_bytes + self.activations_bytes + self.logits_bytes
                + self.overhead_bytes)

    def check(self) -> Plan:
        """Raise HardwareError(reason) when the plan does not fit; else return the plan."""
        if not self.fits:
            raise HardwareError(self.reason)
        return self

    def render(self) -> str:
        """The table `zerotune plan` prints."""
        gb = lambda n: f"{n / GiB:6.2f} GiB"  # noqa: E731
        rows = [("model", self.model), ("device", f"{self.device}, {self.device_memory_bytes / GiB:.1f} GiB"),
                ("parameters", f"{self.params_total / 1e9:.3f} B, {self.params_trainable / 1e6:.2f} M trainable"),
                ("method", self.method), ("precision", f"{self.precision} (base weights {self.weight_dtype})"),
                ("seq len", f"{self.seq_len} (longest that fits: {self.max_seq_len or 'none'})"),
                ("micro-batch x accum", f"{self.micro_batch} x {self.grad_accum} (batch {self.batch_size})"),
                ("grad checkpointing", "on" if self.gradient_checkpointing else "off"),
                ("weights", gb(self.weights_bytes)), ("LoRA/trainable + AdamW", gb(self.trainable_bytes)),
                ("activations", gb(self.activations_bytes)), ("logits + loss", gb(self.logits_bytes)),
                ("runtime", gb(self.overhead_bytes)),
                ("total", f"{gb(self.total_bytes)} of {self.budget_bytes / GiB:.2f} GiB usable"),
                ("fits", "yes" if self.fits else "NO")]
        lines = [f"{k:<23} {v}" for k, v in rows] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines + ([f"error: {self.reason}"] if self.reason else []))


def plan(model_config: dict, *, device: str | DeviceInfo = "auto", seq_len: int = 1024, method: str = "lora",
         r: int = 16, targets: str | list[str] = "all-linear", batch_size: int = 8, precision: str = "auto",
         gradient_checkpointing: str | bool = "auto", lora_dropout: float = 0.0,
         logits_chunk_tokens: int | None = LOGITS_CHUNK_TOKENS, allow_qlora: bool = True,
         model_name: str | None = None) -> Plan:
    """Choose precision, method, micro-batch, accumulation and checkpointing; estimate memory.

    Args:
        model_config: HF config.json dict (no weights needed).
        device: a DeviceInfo, a profile name (see device_for_profile) or "auto" (detect_device).
        seq_len: tokens per row; batch_size: rows per optimizer step (the effective batch).
        method: lora | qlora | dora | full. LoRA that does not fit a GPU in 16 bit becomes qlora
            unless allow_qlora is False (the user pinned the method).
        r, targets, lora_dropout: the adapter (targets 'all-linear' | 'attention' | module names).
        precision: auto | fp32 | bf16 | fp16; gradient_checkpointing: auto | on | off.
        logits_chunk_tokens: tokens whose logits exist at once (zerotune's chunked loss);
            None = every token of the micro-batch (plain transformers).
        model_name: shown in the table; default the config's _name_or_path.
    Returns:
        A Plan; when nothing fits, plan.fits is False and plan.reason says why (see Plan.check).
    """
    dev = device if isinstance(device, DeviceInfo) else (
        detect_device() if device == "auto" else device_for_profile(device))
    counts = count_params(model_config)
    prec = choose_precision(dev, precision)
    gcs = {"auto": [False, True], "off": [False], "on": [True], False: [False], True: [True]}[gradient_checkpointing]
    ctx = dict(cfg=model_config, counts=counts, dev=dev, prec=prec, seq_len=seq_len, r=r, targets=targets,
               batch_size=batch_size, gcs=gcs, dropout=lora_dropout, chunk=logits_chunk_tokens,
               name=model_name or model_config.get("_name_or_path", "model"))
    if method == "qlora" and dev.kind != "cuda":
        result = _settle(ctx, "lora")
        result.fits, result.reason = False, (f"4-bit QLoRA needs bitsandbytes on a CUDA GPU and is not "
                                             f"available on {dev.kind}; use method lora")
        return result
    result = _settle(ctx, method)
    if not result.fits and method == "lora" and dev.kind == "cuda":
        quantized = _settle(ctx, "qlora")
        if quantized.fits and allow_qlora:
            quantized.notes.append(f"LoRA with {prec} weights needs {result.total_bytes / GiB:.1f} GiB: "
                                   "switched to 4-bit QLoRA")
            result = quantized
        else:
            result.reason += ("; method qlora (4-bit) would fit" if quantized.fits else
                              f"; 4-bit QLoRA does not fit either ({quantized.total_bytes / GiB:.1f} GiB)")
    result.notes[:0] = [w for w in [precision_warning(dev, prec)] if w]
    if counts["expert"] and method != "full":
        result.notes.append(f"routed experts ({counts['expert'] / 1e9:.2f} B params) are fused 3D tensors in "
                            "transformers: kept in 16 bit by QLoRA, not counted as LoRA targets")
    return result


def _settle(ctx: dict, method: str) -> Plan:
    """For one method: the largest power-of-two micro-batch that fits, checkpointing only if needed."""
    dev, counts, prec, cfg = ctx["dev"], ctx["counts"], ctx["prec"], ctx["cfg"]
    lora = [] if method == "full" else lora_targets(counts, ctx["targets"])
    if method != "full" and not lora:
        raise HardwareError(f"LoRA targets {ctx['targets']!r} match no linear layer of this model")
    lora_params = sum(x["count"] * (ctx["r"] * (x["in_features"] + x["out_features"])
                                    + (x["out_features"] if method == "dora" else 0)) for x in lora)
    # frozen weights are held in 16 bit on GPUs; on CPU they stay fp32 and bf16 only autocasts matmuls
    half = 2 if prec in ("bf16", "fp16") and dev.kind != "cpu" else 4
    if method == "full":  # fp32 master weights + grads 4 + AdamW 8 bytes per parameter
        weights, trainable, wdtype = 4 * counts["total"], 12 * counts["total"], "fp32"
    elif method == "qlora":  # bitsandbytes quantizes nn.Linear only: not embeddings, lm_head, fused experts
        quantized = counts["linear"] - counts["expert"]
        weights, wdtype = int(quantized * NF4_BYTES + (counts["total"] - quantized) * half), "nf4"
    else:
        weights, wdtype = counts["total"] * half, prec if half == 2 else "fp32"
    if method != "full":
        trainable = 16 * lora_params  # fp32 adapter weight + grad + AdamW exp_avg + exp_avg_sq
    act_bytes = 4 if prec == "fp32" else 2
    targeted_in = sum(x["count"] * x["in_features"] for x in lora) / counts["layers"]
    dropout = targeted_in * (act_bytes + 1) / act_bytes * DROPOUT_FACTOR if ctx["dropout"] > 0 else 0.0
    cpu = dev.kind != "cuda"
    fixed = weights + trainable + (CPU_OVERHEAD if cpu else CUDA_OVERHEAD) + MISC_BYTES
    budget = int(dev.total_memory_bytes * (CPU_USABLE_FRACTION if cpu else GPU_USABLE_FRACTION))

    def need(tokens: int, gc: bool) -> tuple[int, int]:
        return memory_estimate(cfg, tokens=tokens, act_bytes=act_bytes, checkpointing=gc,
                               dropout_values=dropout, logits_chunk_tokens=ctx["chunk"])

    def max_len(gc: bool) -> int:
        lo, hi = 0, int(cfg.get("max_position_embeddings") or 131072)
        while lo < hi:  # memory grows with length: bisect
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fixed + sum(need(mid, gc)) <= budget else (lo, mid - 1)
        return lo

    def build(mb: int, gc: bool, fits: bool) -> Plan:
        acts, logits = need(mb * ctx["seq_len"], gc)
        return Plan(model=ctx["name"], device=dev.name, device_kind=dev.kind,
                    device_memory_bytes=dev.total_memory_bytes, budget_bytes=budget, params_total=counts["total"],
                    params_trainable=lora_params or counts["total"],
                    method=method, precision=prec, weight_dtype=wdtype, seq_len=ctx["seq_len"],
                    batch_size=ctx["batch_size"], micro_batch=mb, grad_accum=-(-ctx["batch_size"] // mb),
                    gradient_checkpointing=gc, max_seq_len=max_len(gc), weights_bytes=weights,
                    trainable_bytes=trainable, activations_bytes=acts, logits_bytes=logits,
                    overhead_bytes=fixed - weights - trainable, fits=fits)

    micro_batches = [2**i for i in range(ctx["batch_size"].bit_length() - 1, -1, -1)]
    for gc in ctx["gcs"]:
        for mb in micro_batches:
            if fixed + sum(need(mb * ctx["seq_len"], gc)) <= budget:
                return build(mb, gc, True)
    best = build(1, ctx["gcs"][-1], False)
    tips = ([f"--seq-len {best.max_seq_len} or less"] if best.max_seq_len >= 64 else []) + [
        "a GPU with more memory (--gpu a100, h100)"]
    best.reason = (f"{best.model} does not fit on {dev.name}: {method} in {prec} needs "
                   f"{best.total_bytes / GiB:.1f} GiB at micro-batch 1 and seq len {ctx['seq_len']}"
                   f"{' with gradient checkpointing' if best.gradient_checkpointing else ''}, "
                   f"{budget / GiB:.1f} GiB usable. Try: {'; '.join(tips)}")
    return best


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HardwareError(f"{path}: cannot read model config: {err}") from None
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: a model config.json must be a JSON object")
    return data


def gguf_model_config(path: str | Path) -> dict:
    """An HF-style llama config dict from a .gguf file's metadata (tensors are not read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as err:
        raise HardwareError(f"{path}: not a readable GGUF file: {err}") from None
    arch = reader.fields["general.architecture"].contents() if "general.architecture" in reader.fields else "llama"

    def get(key: str, default=None):
        found = reader.fields.get(f"{arch}.{key}")
        if found is None and default is None:
            raise HardwareError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return default if found is None else found.contents()

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {"model_type": arch if arch in ("qwen2", "mistral") else "llama", "gguf_architecture": arch,
            "hidden_size": int(get("embedding_length")), "num_hidden_layers": int(get("block_count")),
            "num_attention_heads": int(get("attention.head_count")),
            "num_key_value_heads": int(get("attention.head_count_kv", get("attention.head_count"))),
            "intermediate_size": int(get("feed_forward_length")),
            "vocab_size": int(get("vocab_size", len(tokens.data) if tokens else 32000)),
            "max_position_embeddings": int(get("context_length", 4096)),
            "rope_theta": float(get("rope.freq_base", 10000.0)),
            "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors) and bool(reader.tensors)}


def shipped_model_configs() -> dict[str, Path]:
    """Hub id -> config.json shipped in configs/models (file names spell '/' as '__')."""
    files = sorted(SHIPPED_CONFIGS.glob("*.json")) if SHIPPED_CONFIGS.is_dir() else []
    return {f.stem.replace("__", "/"): f for f in files}


def load_model_config(name_or_path: str | Path) -> dict:
    """A model's config.json as a dict, without weights.

    Args:
        name_or_path: a folder with config.json, a config.json file, a .gguf file, a shipped hub id
            (shipped_model_configs; also its last part, any case), or a hub id fetched with
            huggingface_hub when there is network.
    Returns:
        The config dict, "_name_or_path" set.
    """
    path, name = Path(name_or_path).expanduser(), str(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HardwareError(f"{path}: folder has no config.json")
        return {"_name_or_path": name, **_read_json(path / "config.json")}
    if path.is_file():
        return {"_name_or_path": name, **(gguf_model_config(path) if path.suffix.lower() == ".gguf"
                                          else _read_json(path))}
    shipped = shipped_model_configs()
    for hub_id, file in shipped.items():
        if name.lower() in (hub_id.lower(), hub_id.split("/")[-1].lower()):
            return {**_read_json(file), "_name_or_path": hub_id}
    if name.endswith((".json", ".gguf")) or name.count("/") != 1:
        raise HardwareError(f"{name}: no such file, folder or hub id (shipped: {', '.join(shipped)})")
    try:
        from huggingface_hub import hf_hub_download

        try:  # the local cache first: no network, no retries
            file = hf_hub_download(name, "config.json", local_files_only=True)
        except Exception:  # noqa: BLE001
            file = hf_hub_download(name, "config.json")
    except Exception as err:  # noqa: BLE001 - offline, gated, no such repo: all end the same way
        raise HardwareError(f"{name}: could not fetch config.json from the Hugging Face hub "
                            f"({type(err).__name__}); give a local folder, config.json or .gguf file, "
                            f"or a shipped model: {', '.join(shipped)}") from None
    return {**_read_json(Path(file)), "_name_or_path": name}
