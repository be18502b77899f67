"""The chat page at / in headless Chromium: send a message, watch the streamed answer arrive with the
phone number redacted, with auth on. Needs /usr/bin/chromium (apt-get install -y chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_serve_support import REDACTED, ServerThread, scripted_loaded

from zerotune.serve.app import create_app
from zerotune.serve.safety import ContentFilter

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: apt-get install -y chromium")
def test_chat_page_streams_a_redacted_answer(tmp_path):
    from playwright.sync_api import sync_playwright

    app = create_app(scripted_loaded(), api_key="page-key",
                     content_filter=ContentFilter.from_profile("pii", audit_log=tmp_path / "audit.jsonl"))
    with ServerThread(app) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            outside = []  # any request leaving the server would be a CDN or tracker
            page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(srv.url) else None)
            page.goto(srv.url + "/")
            page.wait_for_selector("#apikey-box:not([hidden])")  # /health says auth is on
            page.fill("#apikey", "page-key")
            page.fill("#prompt", "Who do I call?")
            page.press("#prompt", "Enter")
            answer = page.wait_for_selector(".assistant[data-done='true']", timeout=20_000)
            assert answer.text_content() == REDACTED
            assert answer.get_attribute("data-finish") == "stop"
            assert page.locator(".user").text_content() == "Who do I call?"

            page.fill("#apikey", "wrong")
            page.fill("#prompt", "again")
            page.press("#prompt", "Enter")
            assert "401" in page.wait_for_selector(".error", timeout=20_000).text_content()
            assert errors == [] and outside == []
        finally:
            browser.close()
    assert "6789" not in (tmp_path / "audit.jsonl").read_text()
