"""End to end (slow): `serve()` on the embedded model in its own process, asked through the openai client
to repeat a sentence with phone numbers; the answer comes back with them redacted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

SCRIPT = ("from zerotune.config import build_config\nfrom zerotune.serve.app import serve\n"
          "serve(None, build_config({'serve': {'port': 0, 'audit_log': %r}}))\n")
PROMPT = "Repeat this sentence exactly: You can reach our clinic at 138 0013 8000 or 010-6552 8877."


def _wait_for_url(proc: subprocess.Popen, seconds: float = 300) -> str:
    deadline = time.monotonic() + seconds
    for line in proc.stderr:
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        if match:
            return match.group(1)
        assert time.monotonic() < deadline, "server did not start"
    raise AssertionError(f"server exited with {proc.wait()}")


@pytest.mark.slow
def test_embedded_model_reply_is_redacted(tmp_path):
    import openai

    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "ZEROTUNE_API_KEY": "slow-key"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT % str(audit)], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_for_url(proc)
        client = openai.OpenAI(base_url=url + "/v1", api_key="slow-key", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": PROMPT}]
        reply = client.chat.completions.create(model="embedded", messages=messages, max_tokens=60)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="embedded", messages=messages, max_tokens=60, stream=True) if c.choices)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for text in (reply.choices[0].message.content, streamed):
        assert "[PHONE]" in text and "8877" not in text and "0013" not in text
    assert "8877" not in audit.read_text()
