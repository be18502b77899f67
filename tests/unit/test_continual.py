"""Continual learning: continue an adapter on new data; replaying old rows forgets less."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny import tiny_model
from zerotune.config import ConfigError, build_config
from zerotune.data.packing import epoch_examples, replay_pick, steps_per_epoch
from zerotune.data.tokenize import Example
from zerotune.train import checkpoint
from zerotune.train.recipe import TrainError, train


def _rows(answer: str) -> list[dict]:
    """The same eight prompts; task A and task B answer them differently, so learning B overwrites A."""
    return [{"messages": [{"role": "user", "content": f"item {i}"},
                          {"role": "assistant", "content": f"{answer} {i}"}]} for i in range(8)]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train several times faster on one thread than with threads fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("continual")
    model, tokenizer = tiny_model("llama")
    with torch.no_grad():  # the random head (std 0.02) caps logits near 0.6: nothing could be learned
        model.lm_head.weight.mul_(30)
    model.save_pretrained(str(root / "base"))
    tokenizer.save_pretrained(str(root / "base"))
    for name, answer in (("a", "red"), ("b", "blue")):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(answer)))
    run_a = train(_cfg(root / "base", root, "a", "run_a", steps=30, lora={"r": 4, "alpha": 8.0, "targets": "attention"},
                       data={"eval": str(root / "a.jsonl")}), progress=False)
    return root / "base", root, run_a.run_dir, run_a.eval_loss


def _cfg(base, root, task, out, steps, lora=None, **train_kw):
    return build_config({
        "model": {"name": str(base)}, "lora": {"dropout": 0.0, **(lora or {})},
        "data": {"train": str(root / f"{task}.jsonl"), "eval_fraction": 0.0, **train_kw.pop("data", {})},
        "train": {"output": str(root / out), "max_steps": steps, "batch_size": 4, "lr": 2e-2,
                  "warmup_steps": 0, "scheduler": "constant", **train_kw}})


def _continue_b(setup, out, replay, **train_kw):
    base, root, run_a, _ = setup
    data = {"replay": replay, "eval": str(root / "a.jsonl")}  # eval loss = loss on the old task
    return train(_cfg(base, root, "b", out, 16, init_adapter=str(run_a), data=data, **train_kw), progress=False)


def test_replay_forgets_less_than_no_replay(setup):
    _, _, run_a, learned = setup  # learned: loss on task A when training on it ended
    plain, replayed = _continue_b(setup, "b_plain", 0.0), _continue_b(setup, "b_replay", 1.0)
    assert plain.eval_loss > learned + 0.5  # without replay, task A is forgotten
    assert replayed.eval_loss < plain.eval_loss - 0.5
    saved = yaml.safe_load((replayed.run_dir / "config.yaml").read_text())
    assert saved["train"]["init_adapter"] == str(run_a / "adapter")
    assert saved["data"]["replay_data"] == str(run_a / "data" / "train.jsonl")
    # the adapter decides the shape, whatever the config said (default r=16, all-linear)
    assert saved["lora"]["r"] == 4 and saved["lora"]["targets"] == ["q_proj", "v_proj"]
    adapter_cfg = json.loads((replayed.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4


def test_continued_run_resumes_exactly_and_refuses_a_changed_replay(setup):
    result = _continue_b(setup, "b_resume", 0.5, checkpoint_every_steps=4, keep_checkpoints=9)
    info = checkpoint.read_info(result.run_dir / "checkpoints" / "step-16")
    assert "replay=0.5" in info["fingerprint"]["continual"]
    cut = result.run_dir.parent / "b_cut"
    # step 8 is inside the third epoch (3 steps each), whose replayed rows differ from the first two
    shutil.copytree(result.run_dir / "checkpoints" / "step-8", cut / "checkpoints" / "step-8")
    _continue_b(setup, "b_cut", 0.5, checkpoint_every_steps=4)
    a = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(cut / "adapter" / "adapter_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    with pytest.raises(TrainError, match="continual: init=.* replay=0.5 .* -> .*replay=1.0"):
        _continue_b(setup, "b_resume", 1.0, checkpoint_every_steps=4)


def test_bad_init_adapter_and_replay_without_old_rows(setup, tmp_path):
    base, root, run_a, _ = setup
    with pytest.raises(ConfigError, match="holds no adapter"):
        train(_cfg(base, root, "b", "x", 1, init_adapter=str(tmp_path)), progress=False)
    with pytest.raises(ConfigError, match="data.replay mixes in old rows"):
        train(_cfg(base, root, "b", "x", 1, data={"replay": 1.0}), progress=False)
    with pytest.raises(ConfigError, match="both"):
        train(_cfg(base, root, "b", "run_a", 1, init_adapter=str(run_a)), progress=False)
    assert not (root / "x").exists()


def test_replay_rows_vary_by_epoch_and_are_fixed_by_seed():
    assert replay_pick(10, 4, seed=1, epoch=0) == replay_pick(10, 4, seed=1, epoch=0)
    assert replay_pick(10, 4, seed=1, epoch=0) != replay_pick(10, 4, seed=1, epoch=1)
    many = replay_pick(3, 7, seed=0, epoch=0)  # more than there are: each drawn once before any twice
    assert sorted(many[:3]) == [0, 1, 2] and sorted(many[3:6]) == [0, 1, 2] and len(many) == 7
    new = [Example([i], [i]) for i in range(4)]
    old = [Example([100 + i], [100 + i]) for i in range(6)]
    assert epoch_examples(new, old, 0, 0, 0) is new
    mixed = epoch_examples(new, old, 2, 0, 0)
    assert mixed[:4] == new and all(e in old for e in mixed[4:]) and len(mixed) == 6
    assert steps_per_epoch(len(mixed), 4) == 2
