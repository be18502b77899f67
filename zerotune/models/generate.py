"""Batched generation with the chat template: greedy or sampled, left-padded, stopping at the
template's end-of-turn token. Shared by train's closing evaluation, eval, generate, chat and serve."""

from __future__ import annotations

import time
from dataclasses import dataclass
from threading import Thread
from typing import Iterator

import torch

from zerotune.models.constrain import Constraint
from zerotune.models.templates import ChatFormat, prompt_text


@dataclass(frozen=True)
class Generation:
    """One finished answer and what it cost."""

    text: str
    new_tokens: int
    seconds: float


def stop_ids(tokenizer, fmt: ChatFormat) -> list[int]:
    """Token ids that end an answer: the template's end-of-turn and the tokenizer's EOS."""
    ids = {tokenizer.convert_tokens_to_ids(fmt.end_of_turn)}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None and i >= 0)


def _sampling(temperature: float, top_p: float) -> dict:
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}


def _constrained(constraint: Constraint | None, conversations: list[list[dict]], prompt_len: int) -> dict:
    """generate() arguments that keep each answer to the schema, given the question it answers."""
    if constraint is None:
        return {}
    from transformers import LogitsProcessorList

    questions = [next((m["content"] for m in reversed(conv) if m["role"] == "user"), "") for conv in conversations]
    return {"logits_processor": LogitsProcessorList([constraint.processor(questions, prompt_len)])}


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate_batch(model, tokenizer, fmt: ChatFormat, conversations: list[list[dict]], *,
                   max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                   constraint: Constraint | None = None) -> list[Generation]:
    """Answer several conversations at once.

    Args:
        model: a causal LM (peft-wrapped or not).
        tokenizer: its tokenizer.
        fmt: the chat format.
        conversations: message lists; a trailing assistant message is dropped (it is the reference).
        max_new_tokens: cap on answer length.
        temperature: 0 for greedy.
        top_p: nucleus sampling mass.
        constraint: keep answers to a training set's schema (models/constrain.py); None decodes freely.
    Returns:
        One Generation per conversation; seconds is the batch's wall time shared evenly.
    """
    texts = [prompt_text(tokenizer, fmt, conv) for conv in conversations]
    tokenizer.padding_side = "left"  # so every row's answer starts at the same column
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(_device(model))
    stops = stop_ids(tokenizer, fmt)
    start = time.perf_counter()
    out = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stops,
                         pad_token_id=tokenizer.pad_token_id, **_sampling(temperature, top_p),
                         **_constrained(constraint, conversations, enc["input_ids"].shape[1]))
    seconds = (time.perf_counter() - start) / len(texts)
    results = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        n = next((i for i, t in enumerate(row) if t in stops), len(row))
        results.append(Generation(tokenizer.decode(row[:n], skip_special_tokens=True).strip(), n, seconds))
    return results


def generate_all(model, tokenizer, fmt: ChatFormat, conversations: list[list[dict]], *, batch_size: int = 8,
                 progress: str | None = None, **kwargs) -> list[Generation]:
    """generate_batch over many conversations, longest prompts first to waste less padding.

    Args:
        batch_size: conversations per generate call.
        progress: a tqdm label, or None for no bar.
        kwargs: passed to generate_batch.
    Returns:
        Generations in the order of `conversations`.
    """
    from tqdm import tqdm

    order = sorted(range(len(conversations)), key=lambda i: -sum(len(m["content"]) for m in conversations[i]))
    results: list[Generation | None] = [None] * len(conversations)
    bar = tqdm(total=len(order), desc=progress, unit="ex", disable=progress is None, leave=False)
    for k in range(0, len(order), batch_size):
        chunk = order[k:k + batch_size]
        for i, gen in zip(chunk, generate_batch(model, tokenizer, fmt, [conversations[i] for i in chunk], **kwargs)):
            results[i] = gen
        bar.update(len(chunk))
    bar.close()
    return results  # type: ignore[return-value]


def stream(model, tokenizer, fmt: ChatFormat, conversation: list[dict], *, max_new_tokens: int = 256,
           temperature: float = 0.0, top_p: float = 1.0, constraint: Constraint | None = None) -> Iterator[str]:
    """Yield an answer's text piece by piece as it is generated (for chat and server streaming)."""
    from transformers import TextIteratorStreamer

    enc = tokenizer(prompt_text(tokenizer, fmt, conversation), return_tensors="pt",
                    add_special_tokens=False).to(_device(model))
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(**enc, max_new_tokens=max_new_tokens, eos_token_id=stop_ids(tokenizer, fmt),
                  pad_token_id=tokenizer.pad_token_id, streamer=streamer, **_sampling(temperature, top_p),
                  **_constrained(constraint, [conversation], enc["input_ids"].shape[1]))
    thread = Thread(target=lambda: torch.inference_mode()(model.generate)(**kwargs), daemon=True)
    thread.start()
    yield from streamer
    thread.join()
