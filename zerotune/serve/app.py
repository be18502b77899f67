"""The OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, and a
chat page at /. Answers go through the batcher (one worker thread owns the model) and then the content
filter; streamed answers are filtered as they stream, so nothing the filter would remove ever leaves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from zerotune.config import Config, GenerateConfig, ServeConfig
from zerotune.models.inference import constraint_for
from zerotune.serve import protocol as p
from zerotune.serve.batcher import Backend, Batcher, Job, QueueFull, backend_for
from zerotune.serve.safety import ContentFilter

log = logging.getLogger("zerotune.serve")
API_KEY_ENV = "ZEROTUNE_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
PAGE_HEADERS = {  # the page needs nothing from other origins: no CDN, no third-party requests
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class ServeError(RuntimeError):
    """The server cannot start as asked (address in use, ...); the message says why."""


@dataclass
class _State:
    name: str
    system_prompt: str | None
    cfg: ServeConfig
    generation: GenerateConfig
    content_filter: ContentFilter | None
    batcher: Batcher


def _auth(api_key: str):
    """A dependency accepting only `Authorization: Bearer <api_key>`."""
    # Hashing first makes both sides the same length, so the comparison time says nothing about the key.
    expected = hashlib.sha256(api_key.encode()).digest()

    async def check(authorization: str | None = Header(None)) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        if not (hmac.compare_digest(given, expected) and scheme.lower() == "bearer"):
            raise p.ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return check


def _settings(state: _State, body: p.Sampling, max_tokens: int | None) -> dict:
    """Decoding settings: the request's, else the configured defaults; max_tokens capped."""
    gen = state.generation
    return {"max_new_tokens": min(max_tokens or gen.max_new_tokens, state.cfg.max_tokens),
            "temperature": gen.temperature if body.temperature is None else body.temperature,
            "top_p": gen.top_p if body.top_p is None else body.top_p}


def _check_prompt(state: _State, conversations: list[list[dict]]) -> None:
    size = sum(len(m["content"]) for conv in conversations for m in conv)
    if size > state.cfg.max_prompt_chars:
        raise p.ApiError(400, f"prompt is {size} characters; this server accepts at most "
                         f"{state.cfg.max_prompt_chars}", code="context_length_exceeded")


def _submit(state: _State, conv: list[dict], settings: dict, streaming: bool = False) -> Job:
    try:
        return state.batcher.submit(conv, streaming=streaming, **settings)
    except QueueFull as err:
        raise p.ApiError(429, f"server busy: {err}", kind="rate_limit_error", code="queue_full",
                         headers={"Retry-After": "1"}) from None


async def _answer(state: _State, rid: str, job: Job, settings: dict, stops: list[str]) -> tuple[str, str, dict]:
    """Wait for a batched answer; return (filtered text, finish_reason, usage)."""
    try:
        gen, prompt_tokens = await job.future
    except asyncio.CancelledError:
        job.cancelled.set()  # the client left before its turn: skip it
        raise
    except Exception as err:
        raise p.ApiError(500, f"generation failed: {type(err).__name__}: {err}", kind="server_error") from None
    scanner = p.StopScanner(stops)
    text = scanner.feed(gen.text) + scanner.finish()
    finish = "length" if gen.new_tokens >= settings["max_new_tokens"] and not scanner.hit else "stop"
    if state.content_filter is not None:
        result = state.content_filter.filter_text(text, rid)
        text, finish = result.text, "content_filter" if result.blocked else finish
    return text, finish, p.usage(prompt_tokens, gen.new_tokens)


def _stream(state: _State, rid: str, job: Job, settings: dict, stops: list[str], chat: bool,
            include_usage: bool) -> StreamingResponse:
    """Server-sent events for one streamed answer, stop sequences and the filter applied on the fly."""
    def chunk(text: str | None = None, finish: str | None = None, use: dict | None = None) -> str:
        if chat:
            return p.sse(p.chat_chunk(rid, state.name, {} if text is None else {"content": text}, finish, use))
        return p.sse(p.completion_chunk(rid, state.name, text or "", finish, use))

    async def events():
        scanner = p.StopScanner(stops)
        filt = state.content_filter.stream(rid) if state.content_filter else None
        counts = (0, 0)
        try:
            if chat:
                yield p.sse(p.chat_chunk(rid, state.name, {"role": "assistant", "content": ""}))
            while True:
                item = await job.pieces.get()
                if isinstance(item, Exception):
                    yield p.sse(p.error_body(f"generation failed: {type(item).__name__}: {item}", "server_error"))
                    yield p.sse("[DONE]")
                    return
                if isinstance(item, tuple):
                    counts = item[1:]
                    break
                text = scanner.feed(item)
                text = filt.feed(text) if filt and text else text
                if text:
                    yield chunk(text)
                if scanner.hit or (filt and filt.blocked):
                    job.cancelled.set()  # nothing more will be sent; the worker stops handing pieces over
            tail = scanner.finish()
            tail = (filt.feed(tail) + filt.finish()) if filt else tail
            if tail:
                yield chunk(tail)
            finish = "stop" if scanner.hit or counts[1] < settings["max_new_tokens"] else "length"
            yield chunk(finish="content_filter" if filt and filt.blocked else finish)
            if include_usage:
                yield chunk(use=p.usage(*counts))
            yield p.sse("[DONE]")
        finally:
            job.cancelled.set()
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Request-Id": rid})


def _routes(state: _State, api_key: str | None) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_auth(api_key))] if api_key else [])

    @router.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": state.name, "object": "model", "created": p.now(),
                                            "owned_by": "zerotune"}]}

    @router.post("/chat/completions")
    async def chat(body: p.ChatRequest):
        conv = p.conversation(body.messages, state.system_prompt)
        _check_prompt(state, [conv])
        settings, stops = _settings(state, body, body.max_completion_tokens or body.max_tokens), p.stop_list(body.stop)
        rid = p.request_id("chatcmpl")
        if body.stream:
            job = _submit(state, conv, settings, streaming=True)
            include = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(state, rid, job, settings, stops, True, include)
        text, finish, use = await _answer(state, rid, _submit(state, conv, settings), settings, stops)
        return JSONResponse(p.chat_response(rid, state.name, text, finish, use), headers={"X-Request-Id": rid})

    @router.post("/completions")
    async def completions(body: p.CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        convs = [p.conversation([p.ChatMessage(role="user", content=t)], state.system_prompt) for t in prompts]
        _check_prompt(state, convs)
        settings, stops = _settings(state, body, body.max_tokens), p.stop_list(body.stop)
        rid = p.request_id("cmpl")
        if body.stream:
            if len(convs) != 1:
                raise p.ApiError(400, "streaming takes a single prompt", param="prompt")
            include = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(state, rid, _submit(state, convs[0], settings, True), settings, stops, False, include)
        jobs = []
        try:
            jobs = [_submit(state, conv, settings) for conv in convs]
        except p.ApiError:
            for job in jobs:
                job.cancelled.set()
            raise
        answers = await asyncio.gather(*(_answer(state, rid, job, settings, stops) for job in jobs))
        use = p.usage(sum(a[2]["prompt_tokens"] for a in answers), sum(a[2]["completion_tokens"] for a in answers))
        return JSONResponse(p.completion_response(rid, state.name, [(a[0], a[1]) for a in answers], use),
                            headers={"X-Request-Id": rid})
    return router


def _install_errors(app: FastAPI, max_body: int) -> None:
    @app.exception_handler(p.ApiError)
    async def api_error(_: Request, err: p.ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors())
        return JSONResponse(p.error_body(f"invalid request: {problems}"), status_code=422)

    app.add_middleware(_BodyLimit, max_body=max_body)


class _BodyLimit:
    """Refuses an oversized body before it is read: FastAPI would otherwise parse it whole into memory."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.max_body:
                response = JSONResponse(p.error_body(f"request body over {self.max_body} bytes"), status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(loaded, cfg: ServeConfig | None = None, *, api_key: str | None = None,
               content_filter: ContentFilter | None = None, generation: GenerateConfig | None = None,
               backend: Backend | None = None) -> FastAPI:
    """The FastAPI app serving one loaded model.

    Args:
        loaded: a zerotune.models.inference.Loaded (its name and system prompt are used).
        cfg: queue, batch and cap settings (ServeConfig defaults when None); host/port are not used here.
        api_key: require `Authorization: Bearer <api_key>` on /v1; None = open.
        content_filter: applied to every answer; None = unfiltered.
        generation: default decoding settings for requests that give none.
        backend: what generates; None = the loaded model (tests pass a fake one).
    Returns:
        The app; its batcher thread starts and stops with the app's lifespan.
    """
    cfg = cfg or ServeConfig()
    gen_cfg = generation or GenerateConfig()
    batcher = Batcher(backend or backend_for(loaded, constraint_for(loaded, gen_cfg.constrain)), max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                      wait_ms=cfg.batch_wait_ms)
    state = _State(loaded.name, loaded.system_prompt, cfg, gen_cfg, content_filter, batcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="zerotune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.zerotune = state
    _install_errors(app, max_body=8 * cfg.max_prompt_chars + 1_000_000)
    app.include_router(_routes(state, api_key))
    page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": state.name, "waiting": batcher.waiting, "auth": api_key is not None,
                "filter": content_filter is not None, **batcher.stats}
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so an address in use is one clear error before the model loads."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def audit_path(target: str | None, cfg: ServeConfig) -> Path:
    """Where filter events are logged: serve.audit_log, else RUN_DIR/audit.jsonl, else ./zerotune-audit.jsonl."""
    from zerotune.models.loading import is_run_dir

    if cfg.audit_log:
        return Path(cfg.audit_log)
    if target is not None and is_run_dir(target):
        return Path(target) / "audit.jsonl"
    return Path("zerotune-audit.jsonl")


def serve(target: str | None = None, config: Config | None = None, *, api_key: str | None = None,
          trust_remote_code: bool = False) -> None:
    """Serve a run directory or model over the OpenAI API until interrupted.

    Args:
        target: RUN_DIR, model folder, .gguf, hub id, or None for the embedded default.
        config: host, port, filter and limits (config.serve) and decoding defaults (config.generate);
            None = a run directory's own config.yaml, else the defaults.
        api_key: bearer key clients must send; None = $ZEROTUNE_API_KEY, and no auth when that is unset too.
        trust_remote_code: allow a hub model's own code to run.
    Raises:
        ServeError, FilterProfileError, ModelLoadError: with a message for the user.
    """
    import uvicorn

    from zerotune.models.inference import load_target, read_run_config
    from zerotune.models.loading import is_run_dir

    if config is None:
        config = read_run_config(Path(target)) if target and is_run_dir(target) else Config()
    cfg = config.serve
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    audit = audit_path(target, cfg)
    content_filter = ContentFilter.from_profile(cfg.filter, audit_log=audit, hold_back=cfg.hold_back)
    sock = _listen(cfg.host, cfg.port)
    loaded = load_target(target, merge=True, trust_remote_code=trust_remote_code)
    app = create_app(loaded, cfg, api_key=api_key, content_filter=content_filter, generation=config.generate)
    port = sock.getsockname()[1]
    print(f"zerotune: serving {loaded.name} at http://{cfg.host}:{port}/ (OpenAI API under /v1)", file=sys.stderr)
    print(f"zerotune: filter {cfg.filter if content_filter else 'off'}"
          + (f", audit log {audit}" if content_filter else "") + f"; auth {'on' if api_key else 'off'}",
          file=sys.stderr)
    if cfg.host not in LOOPBACK and not api_key:
        print(f"zerotune: warning: listening on {cfg.host} with no API key; anyone who can reach this "
              f"machine can use the model (set --api-key or {API_KEY_ENV})", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
