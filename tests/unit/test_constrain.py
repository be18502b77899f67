"""Schema-constrained decoding with real tokenizers: what a random model writes stays in the schema."""

import json
from pathlib import Path

import pytest
import torch

from tiny import deepseek_tokenizer, tiny_model
from zerotune.data.formats import read_examples
from zerotune.data.schema import Matcher, infer_schema
from zerotune.models.constrain import Constraint, token_bytes
from zerotune.models.generate import generate_batch, stop_ids
from zerotune.models.templates import resolve_format

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _task(name: str, n: int):
    train = read_examples(str(EXAMPLES / name / "train.jsonl"))
    rows = read_examples(str(EXAMPLES / name / "eval.jsonl"))[:n]
    return infer_schema(train)[0], [r["messages"][:-1] for r in rows]


def test_token_bytes_spell_the_text():
    """Token byte strings joined give back the UTF-8 of the text, Han characters split over tokens included."""
    for tokenizer in (tiny_model("llama")[1], deepseek_tokenizer()):
        table = token_bytes(tokenizer)
        assert table is not None
        for text in ('{"name": "Zoë Ngata", "id": 7}', "性别:女;年龄:43;症状:背痛"):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert b"".join(table[i] for i in ids) == text.encode()


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_a_random_model_writes_schema_answers(task):
    """A random tiny model writes garbage freely; constrained, every finished answer parses, keeps the keys in
    order, uses only training labels and copies only whole spans of its own question."""
    schema, prompts = _task(task, 3)
    model, tokenizer = tiny_model("llama", seed=1)
    fmt = resolve_format(tokenizer, "auto", None)
    constraint = Constraint.build(schema, tokenizer, stop_ids(tokenizer, fmt))
    assert constraint is not None
    free = generate_batch(model, tokenizer, fmt, prompts, max_new_tokens=40)
    kept = generate_batch(model, tokenizer, fmt, prompts, max_new_tokens=400, constraint=constraint)
    assert not any(_complete(schema, p, g.text) for p, g in zip(prompts, free))  # the control: free is junk
    for prompt, gen in zip(prompts, kept):
        assert gen.new_tokens < 400 and _complete(schema, prompt, gen.text), gen.text
        if task == "support_en":
            value = json.loads(gen.text)
            assert list(value) == [f.name for f in schema.fields]
            assert json.dumps(value["issue"]) in {lab for f in schema.fields if f.name == "issue" for lab in f.labels}
            assert value["name"] in prompt[-1]["content"]


def _complete(schema, prompt, text: str) -> bool:
    matcher = Matcher(schema, prompt[-1]["content"])
    return ("end",) in matcher.states(text.encode())


@pytest.mark.parametrize("task", ["support_en", "clinic_zh"])
def test_the_right_answer_is_never_masked(task):
    """The constraint only removes what leaves the schema: a correct answer's own tokens (new values, new
    phrasing) always stay possible, so a model that has learnt the task loses nothing."""
    schema, prompts = _task(task, 1)
    model, tokenizer = tiny_model("llama", seed=2)
    fmt = resolve_format(tokenizer, "auto", None)
    constraint = Constraint.build(schema, tokenizer, stop_ids(tokenizer, fmt))
    target = read_examples(str(EXAMPLES / task / "eval.jsonl"))[0]["messages"][-1]["content"]
    prompt_ids = tokenizer(prompts[0][-1]["content"], add_special_tokens=False)["input_ids"]
    answer = tokenizer(target, add_special_tokens=False)["input_ids"]
    processor = constraint.processor([prompts[0][-1]["content"]], len(prompt_ids))
    vocab = model.config.vocab_size
    for k in range(len(answer)):  # the reference's own tokens are never masked on the way
        ids = torch.tensor([prompt_ids + answer[:k]])
        scores = processor(ids, torch.zeros(1, vocab))
        assert scores[0, answer[k]] == 0, tokenizer.decode(answer[:k + 1])
        assert torch.isinf(scores[0]).sum() > vocab - 2000  # and nearly everything else is
    ended = processor(torch.tensor([prompt_ids + answer]), torch.zeros(1, vocab))
    after = set(torch.nonzero(ended[0] == 0).flatten().tolist())
    assert set(constraint.stops) <= after  # then the answer may end
    if task == "support_en":  # after the closing brace nothing else may come ("无" above may go on as 无基础疾病)
        assert after == set(constraint.stops)


def test_a_run_keeps_its_answers_to_the_schema_it_was_trained_on(tmp_path):
    """train writes data/schema.json; eval, loading the run, decodes within it; constrain=off decodes freely."""
    import zerotune
    from tiny import save_tiny
    from zerotune.config import build_config, update
    from zerotune.data.schema import Schema
    from zerotune.models.inference import read_run_config

    base = save_tiny("llama", tmp_path / "base")
    rows = read_examples(str(EXAMPLES / "support_en" / "train.jsonl"))[:40]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = build_config({"model": {"name": str(base)}, "data": {"train": str(data), "eval_fraction": 0.0},
                        "train": {"output": str(tmp_path / "run"), "max_steps": 1, "batch_size": 4},
                        "eval": {"max_new_tokens": 300, "batch_size": 4}})
    run = zerotune.train(cfg, progress=False, compare=False)["run_dir"]
    schema = Schema.from_json((run / "data" / "schema.json").read_text())
    assert [f.name for f in schema.fields] == ["name", "order_id", "product", "issue", "action"]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                            for r in read_examples(str(EXAMPLES / "support_en" / "eval.jsonl"))[:3]))
    kept = zerotune.evaluate(str(run), str(test), robustness=False, progress=False, out=str(tmp_path / "a"))
    free = zerotune.evaluate(str(run), str(test), robustness=False, progress=False, out=str(tmp_path / "b"),
                             cfg=update(read_run_config(run), generate={"constrain": "off"}))
    assert kept["tuned"]["decoding"] == "schema" and free["tuned"]["decoding"] == "free"
    samples = [json.loads(line) for line in (tmp_path / "a" / "eval" / "samples.jsonl").read_text().splitlines()]
    assert all(_complete(schema, [{"content": s["input"]}], s["prediction"]) for s in samples)
