"""Request batching for the server: one worker thread owns the model, the event loop only waits.

Requests from many clients wait in one queue. The worker takes the oldest, waits a few milliseconds
for others with the same decoding settings, and answers them in one generate call; a streamed request
is answered on its own, piece by piece. Everything that touches the model or the tokenizer runs on
this one thread (fast tokenizers raise "Already borrowed" when two threads use them at once). A full
queue is refused at once (the server answers 429) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from zerotune.models.generate import Generation, generate_batch, stream
from zerotune.models.templates import prompt_text

log = logging.getLogger("zerotune.serve")


class QueueFull(RuntimeError):
    """More requests are waiting than the server accepts."""


@dataclass(frozen=True)
class Backend:
    """What the worker calls; built from a loaded model by `backend_for`, replaceable in tests."""

    generate: Callable[..., list[Generation]]  # (conversations, max_new_tokens=, temperature=, top_p=)
    stream: Callable[..., Iterator[str]]  # (conversation, max_new_tokens=, temperature=, top_p=)
    count_prompt: Callable[[list[dict]], int]
    count_text: Callable[[str], int]


def backend_for(loaded, constraint=None) -> Backend:
    """The Backend answering with a zerotune.models.inference.Loaded model (answers kept to `constraint`'s
    schema when one is given)."""
    model, tok, fmt = loaded.model, loaded.tokenizer, loaded.fmt
    return Backend(
        generate=lambda convs, **kw: generate_batch(model, tok, fmt, convs, constraint=constraint, **kw),
        stream=lambda conv, **kw: stream(model, tok, fmt, conv, constraint=constraint, **kw),
        count_prompt=lambda conv: len(tok(prompt_text(tok, fmt, conv), add_special_tokens=False)["input_ids"]),
        count_text=lambda text: len(tok(text, add_special_tokens=False)["input_ids"]),
    )


@dataclass
class Job:
    """One request's work and the way its answer travels back to the event loop."""

    conversation: list[dict]
    max_new_tokens: int
    temperature: float
    top_p: float
    streaming: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None  # non-streaming: (Generation, prompt_tokens)
    pieces: asyncio.Queue | None = None  # streaming: str pieces, then ("done", prompt, completion) or an error
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple:
        """Jobs batch together only when they decode the same way."""
        return (self.max_new_tokens, self.temperature, self.top_p)


class Batcher:
    """A bounded request queue served by one worker thread."""

    def __init__(self, backend: Backend, *, max_batch: int = 8, max_queue: int = 64, wait_ms: float = 5.0):
        self.backend = backend
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.wait = wait_ms / 1000
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "streams": 0, "errors": 0}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> int:
        """Requests accepted but not yet started."""
        return self._waiting

    def start(self) -> None:
        """Start the worker thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="zerotune-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker after its current batch and fail what is still waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            self._fail(job, RuntimeError("server is shutting down"))

    def submit(self, conversation: list[dict], *, max_new_tokens: int, temperature: float, top_p: float,
               streaming: bool = False) -> Job:
        """Queue a request; await job.future, or read job.pieces when streaming.

        Args:
            conversation: chat messages, system prompt included.
            max_new_tokens, temperature, top_p: decoding settings.
            streaming: answer piece by piece.
        Returns:
            The queued Job.
        Raises:
            QueueFull: max_queue requests are already waiting.
        """
        loop = asyncio.get_running_loop()
        job = Job(conversation, max_new_tokens, temperature, top_p, streaming, loop)
        if streaming:
            job.pieces = asyncio.Queue()
        else:
            job.future = loop.create_future()
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting; try again shortly")
            self._waiting += 1
        self._queue.put(job)
        return job

    def _take(self, job: Job) -> bool:
        """Mark a job as started; False when its client has already gone."""
        with self._lock:
            self._waiting -= 1
        return not job.cancelled.is_set()

    def _run(self) -> None:
        held: deque[Job] = deque()  # taken from the queue while batching other settings
        while not self._stop.is_set():
            job = held.popleft() if held else self._next(timeout=0.1)
            if job is None or not self._take(job):
                continue
            if job.streaming:
                self._serve_stream(job)
            else:
                self._serve_batch(self._collect(job, held))

    def _next(self, timeout: float) -> Job | None:
        try:
            return self._queue.get(timeout=max(timeout, 0.0001))
        except queue.Empty:
            return None

    def _collect(self, first: Job, held: deque[Job]) -> list[Job]:
        """The first job plus compatible ones already held or arriving within the wait window."""
        batch = [first]
        for job in list(held):
            if len(batch) < self.max_batch and not job.streaming and job.key == first.key:
                held.remove(job)
                if self._take(job):
                    batch.append(job)
        deadline = time.monotonic() + self.wait
        while len(batch) < self.max_batch and len(held) < self.max_batch:
            job = self._next(deadline - time.monotonic()) if time.monotonic() < deadline else None
            if job is None:
                break
            if job.streaming or job.key != first.key:
                held.append(job)
            elif self._take(job):
                batch.append(job)
        return batch

    def _serve_batch(self, batch: list[Job]) -> None:
        first = batch[0]
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        try:
            prompts = [self.backend.count_prompt(j.conversation) for j in batch]
            gens = self.backend.generate([j.conversation for j in batch], max_new_tokens=first.max_new_tokens,
                                         temperature=first.temperature, top_p=first.top_p)
        except Exception as err:  # one bad batch must not take the worker down
            log.exception("generation failed")
            self.stats["errors"] += 1
            for job in batch:
                self._fail(job, err)
            return
        for job, gen, n in zip(batch, gens, prompts):
            _post(job.loop, _resolve, job.future, (gen, n))

    def _serve_stream(self, job: Job) -> None:
        self.stats["streams"] += 1
        self.stats["requests"] += 1
        put = job.pieces.put_nowait
        try:
            prompt = self.backend.count_prompt(job.conversation)
            parts = []
            # Drained to the end even when the client left: the generate thread cannot be stopped mid-way.
            for piece in self.backend.stream(job.conversation, max_new_tokens=job.max_new_tokens,
                                             temperature=job.temperature, top_p=job.top_p):
                parts.append(piece)
                if piece and not job.cancelled.is_set():
                    _post(job.loop, put, piece)
            _post(job.loop, put, ("done", prompt, self.backend.count_text("".join(parts))))
        except Exception as err:
            log.exception("streamed generation failed")
            self.stats["errors"] += 1
            self._fail(job, err)

    @staticmethod
    def _fail(job: Job, err: Exception) -> None:
        if job.streaming:
            _post(job.loop, job.pieces.put_nowait, err)
        else:
            _post(job.loop, _reject, job.future, err)


def _post(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    """Hand a result to the event loop; one that has already closed (server stopped) has no reader left."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():  # the client may have gone and the handler cancelled it
        future.set_result(value)


def _reject(future: asyncio.Future, err: Exception) -> None:
    if not future.done():
        future.set_exception(err)
