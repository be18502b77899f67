"""Canonical rows (chat messages) to token ids and loss labels through a chat format."""

from __future__ import annotations

from dataclasses import dataclass

from zerotune.models.templates import IGNORE, ChatFormat, encode_example


@dataclass(frozen=True)
class Example:
    """One tokenised conversation; labels are -100 where nothing is learned."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE)


@dataclass(frozen=True)
class Tokenized:
    """Examples ready for training, and how many rows did not fit the length budget."""

    examples: list[Example]
    too_long: int
    truncated: int


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Prepend a system message unless the conversation already has one."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def tokenize_rows(rows: list[dict], tokenizer, fmt: ChatFormat, max_len: int, *,
                  system_prompt: str | None = None, too_long: str = "drop") -> Tokenized:
    """Encode rows of {"messages": [...]} for training.

    Args:
        rows: canonical rows.
        tokenizer: the model's tokenizer.
        fmt: chat format (decides the masks).
        max_len: token budget per example.
        system_prompt: optional system message for rows without one.
        too_long: "drop" rows over budget, or "truncate" them (kept only if some answer survives).
    Returns:
        Tokenized examples plus counts of dropped and truncated rows.
    """
    examples, dropped, cut = [], 0, 0
    for row in rows:
        ids, labels = encode_example(tokenizer, fmt, with_system(row["messages"], system_prompt))
        if len(ids) > max_len:
            if too_long == "drop" or all(t == IGNORE for t in labels[1:max_len]):
                dropped += 1
                continue
            ids, labels, cut = ids[:max_len], labels[:max_len], cut + 1
        examples.append(Example(ids, labels))
    return Tokenized(examples, dropped, cut)
