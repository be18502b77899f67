"""The tokenizer half of a GGUF file: a byte-level BPE vocabulary (SmolLM, Qwen2, Llama 3, DeepSeek-R1
distills) written as llama.cpp's "gpt2" tokenizer, with the chat template and the special-token ids.

What is written is what both readers need: llama.cpp (Ollama) picks its pre-tokenizer regex by the
`tokenizer.ggml.pre` name, and transformers' GGUF loader rebuilds the tokenizer from tokens, merges and
token types (see transformers/integrations/gguf/gguf_tokenizer_mapping.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from zerotune.export.output import ExportError

# llama.cpp token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class GgufVocab:
    """Everything the writer puts under tokenizer.* for one model."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _known_splits() -> dict[str, str]:
    """Split regex -> llama.cpp pre-tokenizer name, from transformers' own table of the same pairs."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        return {}
    names: dict[str, str] = {}
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        names.setdefault(regex, name)  # the first name listed is the canonical one in llama.cpp too
    return names


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for a tokenizer.json pre_tokenizer (the regex that splits text before BPE).

    Args:
        pre: the "pre_tokenizer" object of tokenizer.json.
    Returns:
        e.g. "gpt-2", "smollm", "qwen2", "llama3"; "default" when the split is not recognised.
    """
    steps = pre.get("pretokenizers", [pre]) if pre and pre.get("type") == "Sequence" else [pre or {}]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM: digits one by one, then GPT-2's regex
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        return _known_splits().get(regex, "default")
    return "default"


def _merges(model: dict) -> list[str]:
    # tokenizers writes merges either as "a b" strings or, since 0.20, as [a, b] pairs
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types for ids 0..vocab_size-1 (unused rows padded, as llama.cpp does)."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(f"the tokenizer has ids up to {max(by_id)} but the model has only {vocab_size} "
                          "embedding rows; cannot write a GGUF vocabulary")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(CONTROL if added[i].special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return tokens, types


def _adds(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer puts BOS / EOS around plain text (llama.cpp's add_bos_token / add_eos_token)."""
    ids = tokenizer("a")["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]
    add_eos = tokenizer.eos_token_id is not None and ids[-1:] == [tokenizer.eos_token_id]
    return add_bos, add_eos


def gguf_vocab(tokenizer, vocab_size: int, end_of_turn: str | None = None) -> GgufVocab:
    """Read a transformers tokenizer into the fields a GGUF file stores.

    Args:
        tokenizer: a fast (tokenizers-backed) tokenizer.
        vocab_size: the model's embedding rows (the token list is padded to this length).
        end_of_turn: the chat format's end-of-turn token, written as the EOT id when it is not EOS.
    Returns:
        The GgufVocab; ExportError for tokenizers other than byte-level BPE.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("GGUF export needs a fast (tokenizer.json) tokenizer")
    spec = json.loads(backend.to_str())
    model, pre = spec.get("model", {}), spec.get("pre_tokenizer")
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(pre):
        raise ExportError(f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')} "
                          f"with pre-tokenizer {(pre or {}).get('type')}")
    tokens, types = _tokens(tokenizer, vocab_size)
    add_bos, add_eos = _adds(tokenizer)
    eot = tokenizer.convert_tokens_to_ids(end_of_turn) if end_of_turn else None
    return GgufVocab(tokens=tokens, token_types=types, merges=_merges(model), pre=pre_tokenizer_name(pre),
                     bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, unk_id=tokenizer.unk_token_id,
                     pad_id=tokenizer.pad_token_id, eot_id=eot if eot != tokenizer.eos_token_id else None,
                     add_bos=add_bos, add_eos=add_eos, chat_template=tokenizer.chat_template)


def write_vocab(writer, vocab: GgufVocab) -> None:
    """Add the tokenizer.* keys to a gguf.GGUFWriter."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                       (vocab.unk_id, writer.add_unk_token_id), (vocab.pad_id, writer.add_pad_token_id),
                       (vocab.eot_id, writer.add_eot_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
