"""Device detection, precision choice, parameter counts, the memory estimate and the plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zerotune import hardware as hw
from zerotune.hardware import DeviceInfo, HardwareError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {  # hub id -> published parameter count
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1.78e9,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 7.6e9,
    "deepseek-ai/deepseek-llm-7b-base": 6.9e9,
    "deepseek-ai/deepseek-llm-7b-chat": 6.9e9,
    "deepseek-ai/DeepSeek-V2-Lite": 15.7e9,
}
TINY = {
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, vocab_size=100, tie_word_embeddings=False),
    "llama_tied": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=128, vocab_size=100, tie_word_embeddings=True,
                       head_dim=32),
    "qwen2": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, vocab_size=100, tie_word_embeddings=False),
    "deepseek_v2": dict(model_type="deepseek_v2", hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=128, vocab_size=100, kv_lora_rank=32,
                        q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2, moe_intermediate_size=32,
                        first_k_dense_replace=1, moe_layer_freq=1, tie_word_embeddings=False),
    "deepseek_v3": dict(model_type="deepseek_v3", hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=128, vocab_size=100, kv_lora_rank=32,
                        q_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=32,
                        first_k_dense_replace=1, n_group=1, topk_group=1, tie_word_embeddings=False),
}


def cpu(capability: str = "AVX2", fast_bf16: bool = False, memory: int = 64 * 2**30) -> DeviceInfo:
    return DeviceInfo(kind="cpu", name=f"test {capability}", total_memory_bytes=memory, bf16_supported=True,
                      bf16_fast=fast_bf16, fp16_fast=False, capability=capability, cores=2, gpu_profile="cpu")


def shipped(hub_id: str) -> dict:
    return hw.load_model_config(hub_id)


# --- devices and precision -------------------------------------------------------------------------

@pytest.mark.parametrize("profile,expected", [("t4", "fp16"), ("v100", "fp16"), ("a100", "bf16"),
                                              ("a100-80", "bf16"), ("l4", "bf16"), ("h100", "bf16"),
                                              ("h200", "bf16")])
def test_auto_precision_per_gpu_profile(profile, expected):
    device = hw.device_for_profile(profile)
    assert device.kind == "cuda" and hw.choose_precision(device, "auto") == expected


def test_cpu_precision_follows_bf16_hardware():
    assert hw.choose_precision(cpu("AVX2"), "auto") == "fp32"
    assert hw.choose_precision(cpu("AMX", fast_bf16=True), "auto") == "bf16"
    assert hw.cpu_device(flags={"avx2", "amx_bf16"}, capability="AVX512").bf16_fast
    assert hw.cpu_device(flags={"avx512f", "avx512_bf16"}, capability="AVX512").bf16_fast
    assert not hw.cpu_device(flags={"avx2", "fma"}, capability="AVX2").bf16_fast


def test_explicit_precision_is_honoured_with_a_warning_when_slow():
    assert hw.choose_precision(cpu("AVX2"), "bf16") == "bf16"
    assert "slower" in hw.precision_warning(cpu("AVX2"), "bf16")
    assert hw.precision_warning(cpu("AMX", fast_bf16=True), "bf16") is None
    assert "not supported" in hw.precision_warning(hw.device_for_profile("t4"), "bf16")
    assert hw.precision_warning(hw.device_for_profile("a100"), "bf16") is None
    with pytest.raises(ValueError):
        hw.choose_precision(cpu(), "int8")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert {"avx2", "amx_bf16"} <= set(hw._cpuinfo("flags", str(info)).split())
    assert hw._cpuinfo("model name", str(info)) == "Test CPU"
    assert hw._cpuinfo("flags", str(tmp_path / "missing")) == ""


def test_detect_device_without_gpu_is_the_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    device = hw.detect_device()
    assert device.kind == "cpu" and device.total_memory_bytes > 2**28 and device.cores >= 1
    assert device.capability == torch.backends.cpu.get_cpu_capability()


def test_k80_and_unknown_gpus_are_clear_errors():
    with pytest.raises(HardwareError, match="K80.*obsolete"):
        hw.device_for_profile("k80")
    with pytest.raises(HardwareError, match="unknown --gpu"):
        hw.device_for_profile("tpu")


# --- parameter counts --------------------------------------------------------------------------------

@pytest.mark.parametrize("hub_id", sorted(SHIPPED))
def test_shipped_configs_match_published_sizes(hub_id):
    total = hw.count_params(shipped(hub_id))["total"]
    assert abs(total - SHIPPED[hub_id]) / SHIPPED[hub_id] < 0.03


@pytest.mark.parametrize("name", sorted(TINY))
def test_count_params_is_exact_against_transformers(name):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY[name]))
    assert hw.count_params(TINY[name])["total"] == sum(p.numel() for p in model.parameters())


# peft 0.21 maps "all-linear" (and gate/up/down names) on transformers-5 DeepSeek-V2 onto the fused
# expert tensors and the router, skipping the dense and shared-expert MLPs: compare attention only.
@pytest.mark.parametrize("name,targets", [("llama", "all-linear"), ("qwen2", "attention"),
                                          ("deepseek_v2", ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]),
                                          ("deepseek_v3", ["q_a_proj", "q_b_proj", "o_proj"])])
def test_lora_parameter_count_matches_peft(name, targets):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    preset = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY[name]))
    names = preset.get(targets, targets) if isinstance(targets, str) else targets
    model = get_peft_model(model, LoraConfig(r=4, target_modules=names))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    linears = hw.lora_targets(hw.count_params(TINY[name]), targets)
    assert sum(x["count"] * 4 * (x["in_features"] + x["out_features"]) for x in linears) == trainable


# --- plans -------------------------------------------------------------------------------------------

def test_small_model_lora_fits_a_t4_in_fp16():
    p = hw.plan(shipped("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"), device="t4", seq_len=1024, method="lora",
                r=16, targets="all-linear", batch_size=8)
    assert p.fits and p.method == "lora" and p.precision == "fp16"
    assert p.micro_batch * p.grad_accum == 8 and p.micro_batch & (p.micro_batch - 1) == 0
    assert p.total_bytes <= p.budget_bytes and "fits" in p.render()


def test_7b_lora_on_a_t4_becomes_qlora():
    p = hw.plan(shipped("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"), device="t4", seq_len=1024, method="lora",
                r=16, targets="all-linear", batch_size=8)
    assert p.fits and p.method == "qlora" and p.weight_dtype == "nf4"
    assert any("QLoRA" in n for n in p.notes)
    pinned = hw.plan(shipped("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"), device="t4", seq_len=1024,
                     method="lora", r=16, targets="all-linear", batch_size=8, allow_qlora=False)
    assert not pinned.fits and "qlora" in pinned.reason
    with pytest.raises(HardwareError, match="does not fit"):
        pinned.check()


def test_qlora_is_refused_on_cpu():
    p = hw.plan(TINY["llama"], device=cpu(), seq_len=128, method="qlora", r=8, targets="all-linear",
                batch_size=4)
    assert not p.fits and "CUDA" in p.reason


def test_checkpointing_switches_on_when_activations_do_not_fit():
    cfg = shipped("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    short = hw.plan(cfg, device="t4", seq_len=512, batch_size=8)
    long = hw.plan(cfg, device="t4", seq_len=4096, batch_size=8)
    assert not short.gradient_checkpointing and long.gradient_checkpointing and long.fits
    off = hw.plan(cfg, device="t4", seq_len=4096, batch_size=8, gradient_checkpointing="off")
    assert not off.fits and "--seq-len" in off.reason


@pytest.mark.parametrize("hub_id", sorted(SHIPPED))
@pytest.mark.parametrize("device", ["t4", "v100", "a100", "h100", "cpu"])
def test_plan_answers_for_every_shipped_model_and_profile(hub_id, device):
    p = hw.plan(shipped(hub_id), device=device, seq_len=1024, method="lora", r=16, targets="all-linear",
                batch_size=8)
    text = p.render()
    assert "total" in text and "micro-batch" in text and (p.fits or p.reason)
    if hub_id.endswith("V2-Lite"):
        assert "experts" in text


def test_full_finetune_needs_sixteen_bytes_per_parameter():
    p = hw.plan(shipped("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"), device="h100", method="full", r=16,
                targets="all-linear", batch_size=8, seq_len=1024)
    assert p.weights_bytes + p.trainable_bytes == 16 * p.params_total and p.fits


# --- model configs -----------------------------------------------------------------------------------

def test_load_model_config_sources(tmp_path):
    assert shipped("DeepSeek-V2-Lite")["model_type"] == "deepseek_v2"
    assert shipped("deepseek-ai/deepseek-r1-distill-qwen-1.5b")["hidden_size"] == 1536
    (tmp_path / "config.json").write_text(json.dumps(TINY["llama"]))
    assert hw.load_model_config(tmp_path)["hidden_size"] == 64
    assert hw.load_model_config(tmp_path / "config.json")["vocab_size"] == 100
    with pytest.raises(HardwareError, match="no config.json"):
        hw.load_model_config(REPO / "zerotune")


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(HardwareError, match="could not fetch config.json"):
        hw.load_model_config("someone/some-model")
    with pytest.raises(HardwareError, match="no such file"):
        hw.load_model_config("missing.gguf")


def test_gguf_metadata_becomes_a_llama_config(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_feed_forward_length(128)
    writer.add_context_length(512)
    writer.add_token_list([f"t{i}" for i in range(100)])
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cfg = hw.load_model_config(path)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (64, 2, 2)
    assert cfg["vocab_size"] == 100 and cfg["tie_word_embeddings"] is True
    assert hw.count_params(cfg)["total"] == hw.count_params({**TINY["llama"], "tie_word_embeddings": True})["total"]


# --- the estimate against measured memory ------------------------------------------------------------

CHILD = """
import json, resource, sys
from zerotune.hardware import tune_cpu_allocator
a = json.loads(sys.argv[1])
tune_cpu_allocator()  # the plan models live tensors, not glibc's heap slack (training skips this call: it is slower)
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
model = get_peft_model(LlamaForCausalLM(LlamaConfig(**a["config"])),
                       LoraConfig(r=a["r"], lora_alpha=16, lora_dropout=0.05, target_modules="all-linear"))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, a["config"]["vocab_size"], (a["batch"], a["seq_len"]))
model(input_ids=ids, labels=ids).loss.backward()
opt.step()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a large pytest
# process would report the parent's peak; the new address space's high-water mark is this child's own.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) * 1024)
"""
SIZES = {  # ~7M, ~40M, ~125M parameters
    "7M": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=688, vocab_size=8000),
    "40M": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                intermediate_size=1376, vocab_size=16000),
    "125M": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 intermediate_size=2048, vocab_size=32000),
}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize("size", sorted(SIZES))
def test_cpu_estimate_is_within_25_percent_of_measured_peak_rss(size):
    config = dict(SIZES[size], max_position_embeddings=1024, tie_word_embeddings=False)
    arg = dict(config=config, r=8, batch=2, seq_len=256)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(arg)], capture_output=True, text=True,
                         cwd=REPO, timeout=600, check=True)
    measured = int(out.stdout.strip().splitlines()[-1])
    p = hw.plan({**config, "model_type": "llama"}, device=cpu(), seq_len=256, batch_size=2, method="lora", r=8,
                targets="all-linear", precision="fp32", gradient_checkpointing="off", logits_chunk_tokens=None)
    assert p.micro_batch == 2
    assert 0.75 <= p.total_bytes / measured <= 1.25, (size, p.total_bytes, measured)
