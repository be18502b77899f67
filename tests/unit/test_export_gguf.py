"""GGUF export: tensors read back equal the merged weights (q8_0 within its quantisation error), the
tokenizer metadata round-trips, and transformers loading the f16 file answers like the merged model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_export_common import PROMPTS, make_run


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def exported(request, tmp_path_factory):
    from zerotune.export import export

    run = make_run(tmp_path_factory.mktemp(request.param), request.param, chat_template="chatml",
                   system_prompt="Answer in JSON.", small_vocab=True)
    out = export(str(run), "gguf")
    return request.param, run / "export" / "merged", out


def _merged_state(merged_dir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(str(merged_dir / "model.safetensors")).items()}


def _gguf_tensors(path, kind: str) -> dict[str, np.ndarray]:
    """The file's tensors dequantised, llama q/k rows put back in HF order by transformers' own reader."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    reader = GGUFReader(str(path))
    heads = {"num_attention_heads": int(reader.fields[f"{kind}.attention.head_count"].contents()),
             "num_key_value_heads": int(reader.fields[f"{kind}.attention.head_count_kv"].contents())}
    unpermute = LlamaTensorProcessor(config=heads)
    out = {}
    for t in reader.tensors:
        array = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        out[t.name] = unpermute.process(array, t.name).weights if kind == "llama" else array
    return out


def _hf_name(gguf_name: str) -> str:
    layer = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if gguf_name in top:
        return top[gguf_name]
    _, n, part, suffix = gguf_name.split(".")
    return f"model.layers.{n}.{layer[part]}.{suffix}"


def test_gguf_tensors_equal_the_merged_weights(exported):
    kind, merged_dir, out = exported
    want = _merged_state(merged_dir)
    f16, q8 = _gguf_tensors(out / "model-f16.gguf", kind), _gguf_tensors(out / "model-q8_0.gguf", kind)
    assert {_hf_name(n) for n in f16} == set(want) == {_hf_name(n) for n in q8}
    if kind == "qwen2":
        assert "blk.0.attn_q.bias" in f16, "Qwen2's q/k/v biases must travel"
    for name, got in f16.items():
        ref = want[_hf_name(name)]
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 if got.ndim > 1 else 0, err_msg=name)
    for name, got in q8.items():
        ref = want[_hf_name(name)]
        if ref.ndim == 1:
            np.testing.assert_array_equal(got, ref, err_msg=name)
            continue
        blocks = np.abs(ref.reshape(-1, 32)).max(axis=1, keepdims=True)  # q8_0: one scale per 32 values
        error = np.abs(got - ref).reshape(-1, 32)
        assert (error <= blocks / 127 * 0.5 + 1e-3 * blocks + 1e-7).all(), name  # half a step, + f16 scale


def test_gguf_tokenizer_metadata_round_trips(exported):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    kind, merged_dir, out = exported
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    fields = GGUFReader(str(out / "model-f16.gguf")).fields
    value = lambda key: fields[key].contents()  # noqa: E731
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == 384 and all(tokens[i] == t for t, i in tokenizer.get_vocab().items())
    assert tokens[-1] == "[PAD383]" and value("tokenizer.ggml.token_type")[-1] == 5
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    assert value("tokenizer.ggml.merges") == [" ".join(m) for m in spec["model"]["merges"]]
    # transformers loads a Qwen2 model's tokenizer as Qwen2Tokenizer, which brings Qwen2's split regex
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == {"llama": "gpt-2", "qwen2": "qwen2"}[kind]
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert value("tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert value("tokenizer.chat_template") == tokenizer.chat_template
    assert value(f"{kind}.context_length") == 256 and value("general.file_type") == 1

    back = AutoTokenizer.from_pretrained(str(out), gguf_file="model-f16.gguf")
    for text in PROMPTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert back(text, add_special_tokens=False)["input_ids"] == ids
    assert back.chat_template == tokenizer.chat_template and back.eos_token == tokenizer.eos_token


def test_transformers_reading_the_f16_file_answers_like_the_merged_model(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, merged_dir, out = exported
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    assert type(loaded) is type(merged)
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    for text in PROMPTS:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert loaded.generate(ids, **kwargs).tolist() == merged.generate(ids, **kwargs).tolist(), text


def test_modelfile_runs_the_q8_file_with_the_runs_format(exported):
    kind, merged_dir, out = exported
    text = (out / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}' in text
    assert 'SYSTEM """Answer in JSON."""' in text and 'PARAMETER stop "<|im_end|>"' in text


def test_gguf_export_reuses_a_current_merge_and_remakes_a_stale_one(exported):
    from zerotune.export import export

    kind, merged_dir, out = exported
    if kind != "llama":
        pytest.skip("once is enough")
    run = merged_dir.parent.parent
    before = (merged_dir / "model.safetensors").stat().st_mtime_ns
    export(str(run), "gguf", gguf_types=("f16",))
    assert (merged_dir / "model.safetensors").stat().st_mtime_ns == before
    assert sorted(p.name for p in out.glob("*.gguf")) == ["model-f16.gguf"]
    assert "FROM ./model-f16.gguf" in (out / "Modelfile").read_text()
    (run / "adapter" / "adapter_config.json").touch()  # as a resumed training run would rewrite it
    export(str(run), "gguf", gguf_types=("f16",))
    assert (merged_dir / "model.safetensors").stat().st_mtime_ns != before


@pytest.mark.slow
def test_embedded_model_export_matches_what_llama_cpp_wrote(tmp_path):
    """The embedded model's folder was dequantised from a GGUF made by llama.cpp's converter, so
    exporting it back must give that file's tensors (within its Q4_1/Q8_0 error, not ours) and vocabulary."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from zerotune.export.gguf import export_gguf
    from zerotune.models.embedded import embedded_dir, gguf_path

    ours = GGUFReader(str(export_gguf(embedded_dir(), tmp_path / "gguf", ("f16",))[0]))
    theirs = GGUFReader(str(gguf_path()))  # ~20 s: 49k tokens and merges, one numpy view each
    theirs_by_name = {t.name: t for t in theirs.tensors}
    assert {t.name for t in ours.tensors} == set(theirs_by_name)
    for t in ours.tensors:
        other = theirs_by_name[t.name]
        got, want = dequantize(t.data, t.tensor_type), dequantize(other.data, other.tensor_type)
        np.testing.assert_allclose(got, want, atol=np.abs(want).max() * 1e-3, err_msg=t.name)  # f16 rounding
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                "llama.rope.freq_base", "llama.attention.head_count_kv", "llama.context_length"):
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
