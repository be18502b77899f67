"""LoRA target presets per architecture, and the config schema's errors."""

import pytest

from tiny import tiny_model
from zerotune.config import ConfigError, build_config, dump_config, load_config
from zerotune.models.targets import TargetError, resolve_targets


def test_deepseek_v3_attention_and_all_linear():
    model, _ = tiny_model("deepseek_v3")
    assert resolve_targets(model, "attention") == ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                                                   "o_proj"]
    every = resolve_targets(model, "all-linear")
    assert "q_proj" not in every and {"kv_b_proj", "gate_proj", "down_proj"} <= set(every)


def test_unknown_module_lists_the_real_ones():
    model, _ = tiny_model("llama")
    with pytest.raises(TargetError) as err:
        resolve_targets(model, ["q_proj", "query"])
    assert "query" in str(err.value) and "v_proj" in str(err.value) and "lm_head" not in str(err.value)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  learning_rate: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.learning_rate: unknown key"):
        load_config(path)


def test_overrides_and_round_trip(tmp_path):
    cfg = build_config({}, ["train.lr=3e-5", "lora.targets=[q_proj, v_proj]", "model.name=null"])
    assert cfg.train.lr == 3e-5 and cfg.lora.targets == ["q_proj", "v_proj"]
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_bad_value_names_field():
    with pytest.raises(ConfigError, match="lora.r"):
        build_config({}, ["lora.r=0"])


def test_yaml_on_off_words_stay_words(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  prepare:\n    slot_swap: off\ntrain:\n  gradient_checkpointing: on\n")
    cfg = load_config(path, ["data.prepare.phrasing_mix=off"])
    assert cfg.data.prepare.slot_swap == "off" and cfg.data.prepare.phrasing_mix == "off"
    assert cfg.train.gradient_checkpointing == "on"
