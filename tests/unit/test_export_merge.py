"""Merged export: the adapter folded into the base gives the adapter model's logits from a folder that
plain transformers loads, carrying the run's chat template, stop tokens and system prompt."""

from __future__ import annotations

import json

import pytest
import torch

from test_export_common import PROMPTS, make_run


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    from zerotune.export import export

    run = make_run(tmp_path_factory.mktemp("merge"), "llama", system_prompt="Answer in JSON.")
    return run, export(str(run), "merged")


def test_merged_logits_equal_the_adapter_models(merged):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerotune.models.inference import load_run

    run, out = merged
    adapted = load_run(run)
    plain = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = AutoTokenizer.from_pretrained(str(out))(PROMPTS, return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        want = adapted.model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
        with adapted.model.disable_adapter():
            base = adapted.model(input_ids=ids).logits
    assert (want - base).abs().max() > 1e-2, "the adapter should change the logits, or the test proves nothing"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not any("lora" in name for name in plain.state_dict())


def test_merged_folder_carries_template_stops_and_system_prompt(merged):
    from transformers import AutoTokenizer, GenerationConfig

    from zerotune.models.inference import load_run

    run, out = merged
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
            "generation_config.json", "zerotune.json"} <= {p.name for p in out.iterdir()}
    fmt = load_run(run).fmt
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.chat_template == fmt.template
    eos = GenerationConfig.from_pretrained(str(out)).eos_token_id
    assert tokenizer.convert_tokens_to_ids(fmt.end_of_turn) in (eos if isinstance(eos, list) else [eos])
    manifest = json.loads((out / "zerotune.json").read_text())
    assert manifest["system_prompt"] == "Answer in JSON." and manifest["end_of_turn"] == "<|im_end|>"
    assert manifest["format"] == "merged" and manifest["source_stamp"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging folders left behind"


def test_merged_uses_the_runs_chat_format_not_the_bases(tmp_path):
    from transformers import AutoTokenizer

    from zerotune.export.merge import export_merged
    from zerotune.models.templates import CHATML_TEMPLATE

    run = make_run(tmp_path, "qwen2", chat_template="chatml", small_vocab=True)
    out = export_merged(run, tmp_path / "merged")
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == CHATML_TEMPLATE
