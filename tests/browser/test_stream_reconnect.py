"""A browser's stream survives a network drop by itself, in real Chromium (Debian's `chromium`,
driven by Playwright; no browser is downloaded).

The page opens `EventSource('/output/stream?ticket=...')` as a browser client would. A proxy in
front of the core then cuts every connection, server side. EventSource reconnects by itself to
the same URL, whose ticket is spent: the stream cookie set with the ticket authenticates it, and
`Last-Event-ID` brings back what was missed. The page has no reconnect code of its own.
"""

from __future__ import annotations

import httpx2
import pytest

from tests.browser.chromium import CHROMIUM_FLAGS, CuttableProxy, chromium_or_skip
from tests.mcp.conftest import PASSWORD, wait_until
from tests.servers import core_server, create_users, fresh_database, running, server_env

pytestmark = pytest.mark.e2e

OPEN_STREAM = """async ([email, password]) => {
  const login = await (await fetch('/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                   body: JSON.stringify({email, password})})).json();
  const ticket = await (await fetch('/output/ticket', {method: 'POST',
                                    headers: {Authorization: 'Bearer ' + login.access_token}})).json();
  window.events = []; window.opens = 0; window.errors = 0;
  const source = new EventSource('/output/stream?ticket=' + encodeURIComponent(ticket.ticket));
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (event) => { window.events.push({id: event.lastEventId, content: JSON.parse(event.data).data.content}); };
  window.source = source;
  return login.access_token;
}"""


def test_eventsource_resumes_by_itself_after_the_connection_is_cut():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with fresh_database() as database:
        env = server_env(**database, SSE_RETRY_MS="300", SSE_HEARTBEAT_SECONDS="1", MEMORY_DRAIN_ON_COMMIT="0")
        create_users("browser@example.com", password=PASSWORD, env=env)
        with running(core_server(env=env, server="uvicorn")) as core, sync_playwright() as playwright:
            proxy = CuttableProxy(core.port)
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"{proxy.url}/healthz")  # any page of the origin: the script runs there
                token = page.evaluate(OPEN_STREAM, ["browser@example.com", PASSWORD])

                def post(content: str) -> None:
                    response = httpx2.post(
                        f"{core.url}/input",
                        json={"content": content},
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=10,
                    )
                    assert response.status_code == 200, response.text

                def events() -> list[dict]:
                    return page.evaluate("window.events")

                wait_until(lambda: page.evaluate("window.opens") == 1, timeout=20)
                post("before the drop")
                wait_until(lambda: len(events()) == 1, timeout=20)

                cookie = next(c for c in page.context.cookies() if c["name"] == "cortex_stream")
                assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/output/"
                assert "cortex_stream" not in page.evaluate("document.cookie"), "no script can read it"

                proxy.cut()
                post("missed during the drop")  # committed while the browser is disconnected
                wait_until(lambda: page.evaluate("window.errors") >= 1, timeout=20)
                post("after the drop")
                wait_until(lambda: len(events()) == 3, timeout=30)

                assert [event["content"] for event in events()] == [
                    "before the drop",
                    "missed during the drop",
                    "after the drop",
                ]
                assert [int(event["id"]) for event in events()] == [1, 2, 3]
                assert page.evaluate("window.source.readyState") == 1, "open, not given up"
                assert page.evaluate("window.opens") == 2
                streams = [head for head in proxy.heads if head.startswith("GET /output/stream")]
                assert len(streams) == 2
                reconnect = streams[1].lower()
                assert "?ticket=" in reconnect, "the built-in reconnect reuses the URL with the spent ticket"
                assert "last-event-id: 1" in reconnect and "cookie: cortex_stream=" in reconnect
            finally:
                browser.close()
                proxy.close()
