"""Chat templates: exact token ids and loss masks pinned for one example per template."""

import pytest

from tiny import deepseek_tokenizer, embedded_tokenizer
from zerotune.models.templates import IGNORE, TemplateError, encode_example, prompt_text, resolve_format

MSGS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."}]
M = IGNORE

PINNED = {
    # SmolLM2's own ChatML template (adds its default system prompt); answer ends with <|im_end|> (2)
    "model": ([1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
               8182, 2, 198, 1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198, 10539, 30, 2],
              [M] * 31 + [10539, 30, 2]),
    # DeepSeek-V3 format: BOS <｜User｜>Hi<｜Assistant｜>Yes.<｜end▁of▁sentence｜>
    "deepseek": ([0, 128803, 23166, 128804, 10240, 16, 1], [M, M, M, M, 10240, 16, 1]),
    # R1-distill: the empty think block belongs to the prompt, not the learned answer
    "deepseek-r1": ([0, 128803, 23166, 128804, 128821, 271, 128822, 271, 10240, 16, 1], [M] * 8 + [10240, 16, 1]),
}


@pytest.fixture(scope="module")
def tokenizers():
    return {"model": embedded_tokenizer(), "deepseek": deepseek_tokenizer(), "deepseek-r1": deepseek_tokenizer()}


@pytest.mark.parametrize("name", list(PINNED))
def test_pinned_ids_and_masks(tokenizers, name):
    tok = tokenizers[name]
    fmt = resolve_format(tok, "auto" if name != "deepseek-r1" else "deepseek-r1")
    assert fmt.name == name
    ids, labels = encode_example(tok, fmt, MSGS)
    assert (ids, labels) == PINNED[name]
    # what generation is prompted with is exactly the masked prefix of training
    prompt = tok(prompt_text(tok, fmt, MSGS), add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt and all(t == IGNORE for t in labels[: len(prompt)])


def test_r1_distill_detected_by_name(tokenizers):
    assert resolve_format(tokenizers["deepseek"], "auto", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").name == "deepseek-r1"


def test_multi_turn_learns_every_answer_and_no_user_text(tokenizers):
    tok = tokenizers["deepseek"]
    fmt = resolve_format(tok, "auto")
    msgs = [{"role": "system", "content": "Be short."}, {"role": "user", "content": "One?"},
            {"role": "assistant", "content": "1"}, {"role": "user", "content": "Two?"},
            {"role": "assistant", "content": "2"}]
    ids, labels = encode_example(tok, fmt, msgs)
    learned = tok.decode([t for t in labels if t != IGNORE])
    assert learned == "1<｜end▁of▁sentence｜>2<｜end▁of▁sentence｜>"
    assert tok.decode(ids).startswith("<｜begin▁of▁sentence｜>Be short.<｜User｜>One?")


def test_no_assistant_message_is_an_error(tokenizers):
    fmt = resolve_format(tokenizers["deepseek"], "auto")
    with pytest.raises(TemplateError):
        encode_example(tokenizers["deepseek"], fmt, [{"role": "user", "content": "x"}])


def test_template_needing_missing_token_is_an_error(tokenizers):
    with pytest.raises(TemplateError, match="lacks"):
        resolve_format(tokenizers["model"], "deepseek")
