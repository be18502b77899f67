"""The OpenAI wire format: request bodies, response and stream-chunk shapes, errors, stop sequences.

Request models ignore fields they do not know (clients send `user`, `seed`, `presence_penalty`, ...),
because refusing them would break the stock `openai` client and the libraries built on it; fields we
do read are validated strictly.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """An error answered as OpenAI's {"error": {...}} body with an HTTP status."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI clients parse."""
        return error_body(self.message, self.kind, self.code, self.param)


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class Sampling(_Body):
    """Decoding fields shared by chat and text completions."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="one answer per request; batching happens across requests")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer")


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(min_length=1)


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(p.type != "text" or p.text is None for p in message.content):
        raise ApiError(400, f"messages[{index}]: only text content parts are supported", param="messages")
    return "".join(p.text for p in message.content)


def conversation(messages: list[ChatMessage], system_prompt: str | None) -> list[dict]:
    """Plain role/content dicts for the chat template, with the model's system prompt when none is given.

    Args:
        messages: the request's messages.
        system_prompt: the run's system prompt (None = the template's own default).
    Returns:
        Message dicts ending with a user turn.
    """
    conv = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m, i)}
            for i, m in enumerate(messages)]
    if conv[-1]["role"] != "user":
        raise ApiError(400, "the last message must be from the user", param="messages")
    if system_prompt and not any(m["role"] == "system" for m in conv):
        conv.insert(0, {"role": "system", "content": system_prompt})
    return conv


def stop_list(stop: str | list[str] | None) -> list[str]:
    """The request's stop sequences as a list (at most 4, as OpenAI allows)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences are allowed", param="stop")
    return [s for s in stops if s]


class StopScanner:
    """Cuts an answer, whole or streamed, at the first stop sequence.

    When streaming, the last len(longest stop) - 1 characters are held back, since they may be the
    start of a stop sequence completed by the next piece.
    """

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.keep = max((len(s) for s in stops), default=1) - 1
        self.hit = False
        self._pending = ""

    def feed(self, piece: str) -> str:
        """Take a piece; return the text before any stop sequence that is safe to pass on."""
        if self.hit:
            return ""
        self._pending += piece
        found = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            out, self._pending = self._pending[:min(found)], ""
            return out
        split = len(self._pending) - self.keep
        out, self._pending = self._pending[:split], self._pending[split:]
        return out

    def finish(self) -> str:
        """What was held back, once the answer is complete."""
        out, self._pending = self._pending, ""
        return out


def request_id(prefix: str) -> str:
    """An id in OpenAI's style, e.g. chatcmpl-1f3a..."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    """Seconds since the epoch, for the `created` field."""
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, text: str, finish: str, use: dict) -> dict:
    """A chat.completion object with one choice."""
    return {"id": rid, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": use}


def chat_chunk(rid: str, model: str, delta: dict, finish: str | None = None, use: dict | None = None) -> dict:
    """A chat.completion.chunk; usage-only chunks have no choices, as OpenAI sends them."""
    choices = [] if use is not None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": now(), "model": model, "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk


def completion_response(rid: str, model: str, answers: list[tuple[str, str]], use: dict) -> dict:
    """A text_completion object, one choice per (text, finish_reason)."""
    choices = [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}
               for i, (text, finish) in enumerate(answers)]
    return {"id": rid, "object": "text_completion", "created": now(), "model": model, "choices": choices,
            "usage": use}


def completion_chunk(rid: str, model: str, text: str, finish: str | None = None, use: dict | None = None) -> dict:
    """A streamed text_completion piece."""
    choices = [] if use is not None else [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": "text_completion", "created": now(), "model": model, "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk


def sse(obj: dict | str) -> str:
    """One server-sent event carrying a JSON object (or the literal [DONE])."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n"
