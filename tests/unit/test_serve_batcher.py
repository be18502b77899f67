"""The batcher: requests with the same settings share a generate call, a full queue refuses, errors
reach the caller without stopping the worker."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zerotune.models.generate import Generation
from zerotune.serve.batcher import Backend, Batcher, QueueFull


class FakeModel:
    """Answers each conversation with its last message, recording batch sizes; can be held or made to fail."""

    def __init__(self):
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def generate(self, convs, *, max_new_tokens, temperature, top_p):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(len(convs))
        return [Generation(c[-1]["content"].upper(), 3, 0.0) for c in convs]

    def stream(self, conv, *, max_new_tokens, temperature, top_p):
        yield from conv[-1]["content"]

    def backend(self) -> Backend:
        return Backend(self.generate, self.stream, lambda conv: 1, len)


def _conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


SETTINGS = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0}


def _run(coro_fn, batcher: Batcher):
    async def main():
        batcher.start()
        try:
            return await coro_fn()
        finally:
            batcher.stop()
    return asyncio.run(main())


def test_concurrent_requests_share_one_generate_call():
    fake = FakeModel()
    batcher = Batcher(fake.backend(), max_batch=8, wait_ms=200)

    async def go():
        jobs = [batcher.submit(_conv(f"q{i}"), **SETTINGS) for i in range(6)]
        return await asyncio.gather(*(j.future for j in jobs))
    results = _run(go, batcher)
    assert [gen.text for gen, _ in results] == [f"Q{i}" for i in range(6)]
    assert fake.batches == [6]


def test_different_settings_are_not_mixed():
    fake = FakeModel()
    batcher = Batcher(fake.backend(), max_batch=8, wait_ms=100)

    async def go():
        jobs = [batcher.submit(_conv(f"q{i}"), **{**SETTINGS, "max_new_tokens": 8 + i % 2}) for i in range(6)]
        return await asyncio.gather(*(j.future for j in jobs))
    results = _run(go, batcher)
    assert [gen.text for gen, _ in results] == [f"Q{i}" for i in range(6)]
    assert sorted(fake.batches) == [3, 3]


def test_streaming_job_yields_pieces_then_counts():
    fake = FakeModel()
    batcher = Batcher(fake.backend())

    async def go():
        job = batcher.submit(_conv("abc"), streaming=True, **SETTINGS)
        items = []
        while not isinstance(items[-1] if items else None, tuple):
            items.append(await job.pieces.get())
        return items
    assert _run(go, batcher) == ["a", "b", "c", ("done", 1, 3)]


def test_full_queue_refuses_and_recovers():
    fake = FakeModel()
    fake.release.clear()
    batcher = Batcher(fake.backend(), max_batch=1, max_queue=2, wait_ms=0)

    async def go():
        first = batcher.submit(_conv("a"), **SETTINGS)
        while batcher.waiting:  # the worker has taken it and is now held in generate
            await asyncio.sleep(0.01)
        waiting = [batcher.submit(_conv(x), **SETTINGS) for x in "bc"]
        with pytest.raises(QueueFull):
            batcher.submit(_conv("d"), **SETTINGS)
        fake.release.set()
        done = await asyncio.gather(first.future, *(j.future for j in waiting))
        later = batcher.submit(_conv("e"), **SETTINGS)
        return [g.text for g, _ in done] + [(await later.future)[0].text]
    assert _run(go, batcher) == ["A", "B", "C", "E"]


def test_generation_error_reaches_caller_and_worker_survives():
    fake = FakeModel()
    fake.fail = True
    batcher = Batcher(fake.backend())

    async def go():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(_conv("a"), **SETTINGS).future
        fake.fail = False
        return (await batcher.submit(_conv("b"), **SETTINGS).future)[0].text
    assert _run(go, batcher) == "B"
    assert batcher.stats["errors"] == 1
