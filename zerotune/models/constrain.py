"""Schema-constrained decoding: at each step only tokens that keep the answer to the training set's
schema (zerotune.data.schema) stay possible; among them the model's own choice wins.

Works with byte-level BPE tokenizers (GPT-2 style: Llama-3, Qwen2, DeepSeek, SmolLM), whose every
token is a known byte string; for others `Constraint.build` returns None and decoding stays free.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import LogitsProcessor

from zerotune.data.schema import Matcher, Schema

MAX_TOKEN_BYTES = 24  # longer tokens are never needed to spell an answer (shorter ones spell the same)
BYTE_LEVEL_SHARE = 0.95  # share of a vocabulary that must map to bytes for a byte-level tokenizer


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 bytes, reversed (char -> byte)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def token_bytes(tokenizer) -> dict[int, bytes] | None:
    """Each ordinary token's bytes; None when the tokenizer is not byte-level BPE."""
    decoder = _byte_decoder()
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    table, missed = {}, 0
    for text, i in tokenizer.get_vocab().items():
        if i in special:
            continue
        try:
            table[i] = bytes(decoder[c] for c in text)
        except KeyError:
            missed += 1
    return table if table and len(table) >= BYTE_LEVEL_SHARE * (len(table) + missed) else None


class Constraint:
    """A schema and one tokenizer's byte table, built once per loaded model."""

    def __init__(self, schema: Schema, table: dict[int, bytes], stops: list[int]):
        self.schema = schema
        self.bytes = table
        self.stops = list(stops)
        self.by_bytes: dict[bytes, list[int]] = {}
        self.prefixes: set[bytes] = set()
        for i, b in table.items():
            if 0 < len(b) <= MAX_TOKEN_BYTES:
                self.by_bytes.setdefault(b, []).append(i)
                self.prefixes.update(b[:k] for k in range(1, len(b) + 1))

    @staticmethod
    def build(schema: Schema | None, tokenizer, stops: list[int]) -> "Constraint | None":
        if schema is None:
            return None
        table = token_bytes(tokenizer)
        return None if table is None else Constraint(schema, table, stops)

    def allowed(self, matcher: Matcher, ids: list[int]) -> list[int]:
        """Token ids that may follow the answer so far (`ids`); the stop tokens once it is complete."""
        text = b"".join(self.bytes.get(i, b"") for i in ids)
        strings, end = matcher.continuations(text)
        found: set[int] = set(self.stops) if end else set()
        for s in strings:
            for k in range(1, len(s) + 1):
                head = s[:k]
                if head not in self.prefixes:
                    break
                found.update(self.by_bytes.get(head, ()))
        return sorted(found) if found else list(self.stops)  # off the schema: end rather than ramble

    def processor(self, questions: list[str], prompt_len: int) -> "SchemaProcessor":
        return SchemaProcessor(self, [Matcher(self.schema, q) for q in questions], prompt_len)


class SchemaProcessor(LogitsProcessor):
    """A transformers logits processor: -inf for every token that would leave the schema."""

    def __init__(self, constraint: Constraint, matchers: list[Matcher], prompt_len: int):
        self.c = constraint
        self.matchers = matchers
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        stops = set(self.c.stops)
        for row, matcher in enumerate(self.matchers):
            new = input_ids[row, self.prompt_len:].tolist()
            if any(t in stops for t in new):
                continue  # finished; generate pads it from here on
            keep = torch.tensor(self.c.allowed(matcher, new), device=scores.device)
            masked = torch.full_like(scores[row], float("-inf"))
            masked[keep] = scores[row, keep]
            scores[row] = masked
        return scores
