"""Three LoRA steps on tiny random Llama, Qwen2 and DeepSeek-V3 models through zerotune's own loop."""

import pytest
import torch

from tiny import ROWS, tiny_model
from zerotune.config import build_config
from zerotune.data.packing import pack, split_rows
from zerotune.data.tokenize import tokenize_rows
from zerotune.models.templates import resolve_format
from zerotune.train import loop
from zerotune.train.optim import build_optimizer, build_scheduler
from zerotune.train.recipe import attach_adapter


def _setup(examples, steps=3):
    return loop.LoopSetup(examples=examples, batch_size=len(examples), row_tokens=4096, seed=0, epochs=steps,
                          total_steps=steps, max_grad_norm=1.0, device=torch.device("cpu"), autocast_dtype=None)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "deepseek_v3"])
def test_three_lora_steps_learn_and_reload(kind, tmp_path):
    model, tokenizer = tiny_model(kind)
    fmt = resolve_format(tokenizer, "auto")
    assert fmt.name == ("deepseek" if kind == "deepseek_v3" else "model")
    examples = tokenize_rows(ROWS, tokenizer, fmt, 512).examples
    cfg = build_config({"lora": {"targets": "attention", "dropout": 0.0}, "train": {"lr": 1e-2, "scheduler": "constant",
                                                                                    "warmup_ratio": 0.0}})
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = attach_adapter(model, cfg)
    targets = set(peft_model.peft_config["default"].target_modules)
    if kind == "deepseek_v3":
        assert targets == {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}
    else:
        assert targets == {"q_proj", "v_proj"}
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    setup = _setup(examples)
    optimizer = build_optimizer(peft_model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, 3)
    rows = [pack(r) for r in split_rows(examples, 4096)]
    losses = [loop.train_step(peft_model, optimizer, scheduler, rows, setup)[0] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    final = loop.eval_loss(peft_model, examples, setup)
    assert final < losses[0]

    merged_names = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                    for k, v in peft_model.state_dict().items() if "lora_" not in k}
    for name, before in base_before.items():
        assert torch.equal(merged_names[name], before), f"base weight {name} changed"
    changed = [n for n, p in peft_model.named_parameters() if p.requires_grad and not torch.equal(p, lora_before[n])]
    assert changed and len(changed) == len(lora_before)

    peft_model.save_pretrained(str(tmp_path / "adapter"))
    from peft import PeftModel

    fresh, _ = tiny_model(kind)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    peft_model.eval()
    ids = torch.tensor([examples[0].input_ids])
    with torch.no_grad():
        assert torch.equal(peft_model(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_packed_loss_equals_sum_of_unpacked():
    model, tokenizer = tiny_model("llama")
    fmt = resolve_format(tokenizer, "auto")
    examples = tokenize_rows(ROWS, tokenizer, fmt, 512).examples
    with torch.no_grad():
        packed = loop.row_loss(model, pack(examples), torch.device("cpu"))
        single = sum(loop.row_loss(model, pack([e]), torch.device("cpu")) for e in examples)
    assert torch.allclose(packed, single, rtol=1e-5, atol=1e-5)


def test_micro_batches_give_the_same_gradient():
    """1 example x 4 micro-batches == 4 examples x 1 micro-batch: loss is normalised per step."""
    grads = []
    for row_tokens in (1, 4096):  # 1 forces one example per micro-batch
        model, tokenizer = tiny_model("llama")
        fmt = resolve_format(tokenizer, "auto")
        examples = tokenize_rows(ROWS, tokenizer, fmt, 512).examples
        rows = [pack(r) for r in split_rows(examples, row_tokens)]
        assert len(rows) == (4 if row_tokens == 1 else 1)
        n_target = sum(r.n_target for r in rows)
        for row in rows:
            (loop.row_loss(model, row, torch.device("cpu")) / n_target).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
