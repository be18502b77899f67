"""Export plumbing (bad input, atomic output, stale merges) and the tiny run directories the other
export tests build on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny import embedded_tokenizer
from zerotune.config import build_config, dump_config

PROMPTS = ["<|im_start|>user\nExtract: Maria Lopez, order 48213<|im_end|>\n<|im_start|>assistant\n",
           "The capital of France is", "患者女，43岁，主诉背痛"]


def small_tokenizer():
    """A 338-token byte-level BPE with ChatML specials: GGUF files with SmolLM's 49k-token vocabulary
    take transformers ~10 s per read, this one well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from zerotune.models.templates import CHATML_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(PROMPTS + ["hello world, order 48213 " * 3], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>", chat_template=CHATML_TEMPLATE)


def save_base(kind: str, path: Path, seed: int = 0, small_vocab: bool = False) -> Path:
    """A tiny random Llama/Qwen2 saved to path, with the embedded tokenizer or small_tokenizer().

    Head size 16 (ONNX Runtime's attention kernel needs a multiple of 16) and weights drawn wider than
    the default init, so greedy argmaxes are clear of float noise and outputs compare exactly. The
    small vocabulary gets 384 embedding rows, more than its tokens, as real models often have.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = small_tokenizer() if small_vocab else embedded_tokenizer()
    shape = dict(vocab_size=384 if small_vocab else len(tokenizer), hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 initializer_range=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 tie_word_embeddings=kind == "llama")
    config = LlamaConfig(**shape) if kind == "llama" else Qwen2Config(**shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if kind == "qwen2":
        with torch.no_grad():  # random q/k/v biases, so the GGUF round trip has to carry them
            for name, param in model.named_parameters():
                if name.endswith("proj.bias"):
                    param.normal_(0, 0.2)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def make_run(root: Path, kind: str = "llama", chat_template: str = "auto", system_prompt: str | None = None,
             seed: int = 0, small_vocab: bool = False) -> Path:
    """A run directory as `zerotune train` leaves it, with a random non-zero LoRA adapter.

    Args:
        root: a scratch folder (base/ and run/ are made in it).
        kind: "llama" or "qwen2".
        chat_template: the run's model.chat_template.
        system_prompt: the run's model.system_prompt.
        seed: seeds the base weights and the adapter.
        small_vocab: use small_tokenizer() instead of the embedded model's.
    Returns:
        The run directory.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_base(kind, root / "base", seed, small_vocab)
    run = root / "run"
    run.mkdir(parents=True)
    cfg = build_config({"model": {"name": str(base), "chat_template": chat_template, "system_prompt": system_prompt},
                        "train": {"output": str(run)}})
    (run / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # peft starts B at zero, which would make the merge a no-op
    peft_model.save_pretrained(str(run / "adapter"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run / "adapter"))
    return run


def test_export_rejects_what_is_not_a_run(tmp_path):
    from zerotune.export import ExportError, export

    with pytest.raises(ExportError, match="not a zerotune run directory"):
        export(str(tmp_path), "merged")
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ExportError, match="format 'tflite'"):
        export(str(tmp_path), "tflite")


def test_export_names_missing_adapter(tmp_path):
    from zerotune.export import ExportError, export

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(build_config({"train": {"output": str(run)}})))
    with pytest.raises(ExportError, match="no trained adapter"):
        export(str(run), "merged")
    assert not (run / "export" / "merged").exists()


def test_staged_dir_is_all_or_nothing(tmp_path):
    from zerotune.export.output import ExportError, staged_dir, write_manifest

    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with staged_dir(final) as tmp:
        write_manifest(tmp, {"format": "merged"})
        (tmp / "a").write_text("1")
    with staged_dir(final) as tmp:  # an earlier export is replaced whole
        write_manifest(tmp, {"format": "merged"})
    assert sorted(p.name for p in final.iterdir()) == ["zerotune.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a zerotune export"):
        with staged_dir(mine):
            pass
    assert (mine / "notes.txt").read_text() == "keep me"


def test_export_rejects_unsupported_architectures(tmp_path):
    from zerotune.export import ExportError
    from zerotune.export.gguf import export_gguf
    from zerotune.export.onnx import export_onnx

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["DeepseekV3ForCausalLM"]}')
    with pytest.raises(ExportError, match="DeepseekV3ForCausalLM"):
        export_onnx(folder, tmp_path / "onnx")
    with pytest.raises(ExportError, match="DeepseekV3ForCausalLM"):
        export_gguf(folder, tmp_path / "gguf")
    with pytest.raises(ExportError, match="precision 'int3'"):
        export_onnx(folder, tmp_path / "onnx", precision="int3")


def test_exports_carry_the_answer_schema_as_grammars(tmp_path):
    """A run whose answers have a schema exports it as answer.gbnf / .lark / .schema.json beside the
    model; a run without one exports none."""
    from zerotune.data.formats import read_examples
    from zerotune.data.schema import infer_schema
    from zerotune.export import export
    from zerotune.export.grammar import gbnf, json_schema

    plain = export(str(make_run(tmp_path / "plain", small_vocab=True)), "merged")
    assert not list(plain.glob("answer.*"))
    run = make_run(tmp_path / "schema", small_vocab=True)
    examples = Path(__file__).resolve().parents[2] / "examples" / "support_en" / "train.jsonl"
    schema = infer_schema(read_examples(str(examples)))[0]
    (run / "data").mkdir()
    (run / "data" / "schema.json").write_text(schema.to_json(), encoding="utf-8")
    out = export(str(run), "merged")
    assert (out / "answer.gbnf").read_text(encoding="utf-8") == gbnf(schema)
    assert json.loads((out / "answer.schema.json").read_text(encoding="utf-8")) == json_schema(schema)
    assert (out / "answer.lark").is_file()
