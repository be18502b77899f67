"""The server through the official `openai` client and raw HTTP, on a loopback port: chat, streaming,
completions, models, auth, validation, caps, 429 on a full queue, 50 concurrent clients, and the
content filter redacting a phone number the (scripted) model streams in pieces."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from test_serve_support import REDACTED, REPLY_TOKENS, ServerThread, scripted_loaded

from zerotune.config import ServeConfig
from zerotune.models.generate import Generation
from zerotune.serve.app import ServeError, _listen, audit_path, create_app
from zerotune.serve.batcher import Backend
from zerotune.serve.safety import ContentFilter

KEY = "sk-test-key"
USER = [{"role": "user", "content": "What number do I call?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    audit = tmp_path_factory.mktemp("serve") / "audit.jsonl"
    app = create_app(scripted_loaded(), ServeConfig(max_tokens=64, max_prompt_chars=2000), api_key=KEY,
                     content_filter=ContentFilter.from_profile("pii", audit_log=audit))
    with ServerThread(app) as srv:
        srv.audit = audit
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [scripted_loaded().name]


def test_chat_redacts_the_phone_number(client):
    reply = client.chat.completions.create(model="any", messages=USER)
    assert reply.choices[0].message.content == REDACTED
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == REPLY_TOKENS and reply.usage.prompt_tokens > 0
    assert reply.id.startswith("chatcmpl-")


def test_streamed_chat_redacts_a_phone_split_across_chunks(client):
    chunks = list(client.chat.completions.create(model="any", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == REDACTED
    assert not any(digit in piece for piece in pieces for digit in "6789")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == REPLY_TOKENS


def test_completions_plain_and_streamed(client):
    done = client.completions.create(model="any", prompt=["one", "two"], max_tokens=32)
    assert [c.text for c in done.choices] == [REDACTED, REDACTED]
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="any", prompt="hi", stream=True)
                       if c.choices)
    assert streamed == REDACTED


def test_stop_sequences_and_max_tokens(client):
    reply = client.chat.completions.create(model="any", messages=USER, stop=[":"])
    assert reply.choices[0].message.content == "Sure, call"
    short = client.chat.completions.create(model="any", messages=USER, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    capped = client.chat.completions.create(model="any", messages=USER, max_tokens=100_000)
    assert capped.choices[0].message.content == REDACTED  # accepted, capped to the server's 64


def test_auth_required_and_compared(server):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # health and page stay open


@pytest.mark.parametrize("body, status, words", [
    ({"messages": "hello"}, 422, "messages"),
    ({"messages": []}, 422, "messages"),
    ({"messages": USER, "temperature": 5}, 422, "temperature"),
    ({"messages": USER, "max_tokens": 0}, 422, "max_tokens"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 422, "role"),
    ({"messages": USER + [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
    ({"messages": [{"role": "user", "content": "x" * 3000}]}, 400, "at most 2000"),
    ({"messages": USER, "stop": list("abcde")}, 400, "stop"),
])
def test_bad_requests_get_a_message(server, body, status, words):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status
    assert words in r.json()["error"]["message"]


def test_malformed_json_is_422(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["error"]["message"]


def test_audit_log_has_events_but_no_raw_text(server, client):
    client.chat.completions.create(model="any", messages=USER)
    raw = server.audit.read_text()
    rows = [json.loads(line) for line in raw.splitlines()]
    assert rows and {r["rule"] for r in rows} == {"phone"}
    assert "6789" not in raw and "12-345" not in raw


def test_fifty_concurrent_clients_all_succeed(server, client):
    def ask(i: int) -> str:
        if i % 5 == 0:
            stream = client.chat.completions.create(model="any", messages=USER, stream=True, max_tokens=24)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return client.chat.completions.create(model="any", messages=USER, max_tokens=24).choices[0].message.content
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(ask, range(50)))
    assert answers == [REDACTED] * 50
    health = httpx.get(server.url + "/health").json()
    assert health["largest_batch"] > 1 and health["errors"] == 0


def _slow_backend(release: threading.Event) -> Backend:
    def generate(convs, **_):
        release.wait(20)
        return [Generation("ok", 1, 0.0) for _ in convs]
    return Backend(generate, lambda conv, **_: iter(["ok"]), lambda conv: 1, len)


def test_full_queue_answers_429_then_recovers():
    # Injected slow generator (this test only): hold the worker so the queue fills deterministically.
    release = threading.Event()
    app = create_app(scripted_loaded(), ServeConfig(max_queue=2, max_batch=1, batch_wait_ms=0),
                     backend=_slow_backend(release))
    body = {"messages": USER}
    with ServerThread(app) as srv, ThreadPoolExecutor(max_workers=3) as pool:
        post = lambda: httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30)  # noqa: E731
        first = pool.submit(post)
        _wait_for(lambda: httpx.get(srv.url + "/health").json()["requests"] == 1)  # worker is held in generate
        queued = [pool.submit(post) for _ in range(2)]
        _wait_for(lambda: httpx.get(srv.url + "/health").json()["waiting"] == 2)
        refused = post()
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]["message"]
        release.set()
        assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]
        assert post().status_code == 200


def test_generation_failure_is_500_not_a_crash():
    def broken(convs, **_):
        raise RuntimeError("out of memory")
    app = create_app(scripted_loaded(), backend=Backend(broken, broken, lambda conv: 1, len))
    with ServerThread(app) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": USER}, timeout=30)
        assert r.status_code == 500 and "out of memory" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/health").json()["errors"] == 1


def test_address_in_use_is_a_clear_error(tmp_path):
    with ServerThread(create_app(scripted_loaded())) as srv, pytest.raises(ServeError, match="cannot listen on"):
        _listen("127.0.0.1", srv.port)
    assert audit_path(None, ServeConfig(audit_log=str(tmp_path / "a.jsonl"))) == tmp_path / "a.jsonl"


def _wait_for(check, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
