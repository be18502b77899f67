"""Template filling and back-translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerotune.data.augment import (FunctionTranslator, LMTranslator, back_translate, fill_templates)
from zerotune.data.formats import DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
SEED_TEMPLATE = "患者{年龄}岁，主诉{症状}，既往史{病史}，建议{诊断}"


class FakeTranslator:
    """Deterministic 'translation': tags the text with the language it is now in."""

    def __init__(self):
        self.calls = []

    def translate(self, texts, src, dst):
        self.calls.append((src, dst, len(texts)))
        if dst == "en":
            return [f"EN({t})" for t in texts]
        return [t[3:-1].replace("怎么", "如何") for t in texts]


def spec(tmp_path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_seed_template_with_cjk_slots(tmp_path):
    path = spec(tmp_path, f"""
slots:
  年龄: [30, 45]
  症状: [发热, 咳嗽]
  病史: [无]
  诊断: [多休息]
templates:
  - "{SEED_TEMPLATE.replace('，建议', ' => 建议')}"
""")
    rows = fill_templates(path)
    assert len(rows) == 4
    assert rows[0] == {"messages": [{"role": "user", "content": "患者30岁，主诉发热，既往史无"},
                                    {"role": "assistant", "content": "建议多休息"}], "augmented": "template"}


def test_fixture_spec_is_deterministic_and_joint_slots_stay_together():
    rows = fill_templates(str(FIXTURES / "templates.yaml"), seed=3)
    assert rows == fill_templates(str(FIXTURES / "templates.yaml"), seed=3)
    assert rows != fill_templates(str(FIXTURES / "templates.yaml"), seed=4)
    assert len(rows) == 12  # per_template: 6, two templates
    for row in rows:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert ("发热" in user) == ("38.5" in answer)  # a symptom keeps its own diagnosis
    assert {r.get("category") for r in rows} == {"医疗", None}


def test_all_combinations_when_few(tmp_path):
    path = spec(tmp_path, "slots: {a: [1, 2, 3], b: [x, y]}\ntemplates: [{input: '{a}{b}', output: ok}]\n")
    assert sorted(r["messages"][0]["content"] for r in fill_templates(path)) == \
        ["1x", "1y", "2x", "2y", "3x", "3y"]


def test_json_braces_in_templates_are_not_slots(tmp_path):
    path = spec(tmp_path, "slots: {n: [1]}\ntemplates: [{input: 'give {n}', output: '{\"n\": {n}}'}]\n")
    assert fill_templates(path)[0]["messages"][1]["content"] == '{"n": 1}'


@pytest.mark.parametrize("text, message", [
    ("slots: {a: [1]}\ntemplates: [{input: '{a}{b}', output: x}]\n", "unknown slot {b} (templates[0])"),
    ("slots: {a: [1]}\ntemplates: ['{a} only']\n", "has no output"),
    ("slots: {a: []}\ntemplates: ['{a} => x']\n", "non-empty list of values (slots.a)"),
    ("templates: ['q => a']\n", "slot name to a list of values (slots)"),
    ("slots: {a: [1]}\ntemplates: [{input: '{a}', output: x, extra: 1}]\n", "unknown key 'extra'"),
    ("slots: {a: [1]\n", "cannot read template spec"),
])
def test_bad_specs_are_named(tmp_path, text, message):
    with pytest.raises(DataError, match=message.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        fill_templates(spec(tmp_path, text))


def rows():
    return [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "怎么退货"},
                          {"role": "assistant", "content": '{"ok": true}'}], "category": "售后"},
            {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}]


def test_back_translation_paraphrases_user_turns_only():
    fake = FakeTranslator()
    out = back_translate(rows(), fake, "zh", "en", batch_size=8)
    assert fake.calls == [("zh", "en", 2), ("en", "zh", 2)]
    assert out == [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "如何退货"},
                                 {"role": "assistant", "content": '{"ok": true}'}],
                    "category": "售后", "augmented": "back_translation"}]  # "你好" came back unchanged


def test_function_and_lm_translators():
    fn = FunctionTranslator(lambda texts, src, dst: [f"{src}>{dst}:{t}" for t in texts])
    assert fn.translate(["a"], "zh", "en") == ["zh>en:a"]
    prompts = []

    def generate(batch):
        prompts.extend(batch)
        return [" translated "] * len(batch)

    assert LMTranslator(generate).translate(["你好"], "zh", "en") == ["translated"]
    assert prompts[0].startswith("Translate the following Chinese text into English.") and prompts[0].endswith("你好")


def test_translator_returning_wrong_count_is_an_error():
    bad = FunctionTranslator(lambda texts, src, dst: texts[:1])
    with pytest.raises(DataError, match="asked for 2 texts, got 1 items"):
        back_translate(rows(), bad)


@pytest.mark.slow
def test_seq2seq_translator_on_a_tiny_local_model(tmp_path):
    """The transformers backend loads local folders only and returns one string per text."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    from zerotune.data.augment import Seq2SeqTranslator

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate("你 好 hello world".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    cfg = BartConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                     max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                     decoder_start_token_id=2)
    torch.manual_seed(0)
    BartForConditionalGeneration(cfg).save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    translator = Seq2SeqTranslator({"zh-en": str(tmp_path)}, max_new_tokens=4)
    out = translator.translate(["你 好", "hello"], "zh", "en")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError, match="no translation model for en-zh"):
        translator.translate(["hello"], "en", "zh")
