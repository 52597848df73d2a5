"""Two tabs of one person share one session, and exactly one of them refreshes it.

Access tokens live 10 s here, so refreshes come quickly. Refresh tokens rotate and reusing a rotated
one revokes the whole family: if both tabs refreshed the same token, the second refresh would be a
401 and both tabs would be signed out. Streams end with the token that opened them, so both tabs
must also move their streams to the new token without losing or repeating an event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.browser.console_site import ConsoleSite, console_site, texts, wait_live
from tests.mcp.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

TOKEN_SECONDS = 10


@pytest.fixture(scope="module")
def site() -> Iterator[ConsoleSite]:
    with console_site(ACCESS_TOKEN_SECONDS=str(TOKEN_SECONDS)) as running_site:
        yield running_site


def test_two_tabs_stay_live_through_token_expiry_with_one_refresh_between_them(site: ConsoleSite):
    workspace = site.workspace("alice", "Tabs")
    conversation = site.conversation("alice", workspace, "two tabs", with_=("bob",))
    context = site.new_context()
    refreshes: list[int] = []
    context.on("response", lambda r: refreshes.append(r.status) if r.url.endswith("/auth/refresh") else None)
    try:
        first = site.sign_in(context, "alice", f"#/c/{conversation}")
        signed_in_at = time.monotonic()
        second = site.open_console(context, f"#/c/{conversation}")  # no form: it joins the first tab's session
        wait_live(second)
        assert second.get_by_label("Password").count() == 0
        site.post("bob", "to both tabs", conversation)
        for page in (first, second):
            page.wait_for_selector(".message .text:text-is('to both tabs')")

        # Playwright's sync API hands over browser events only while it is called: wait through it.
        wait_until(lambda: first.wait_for_timeout(100) or len(refreshes) >= 1, timeout=TOKEN_SECONDS + 10)
        first.wait_for_timeout(2000)  # a second tab refreshing the same token would do it now
        assert refreshes == [200], "one refresh for both tabs"
        tokens = {page.evaluate("window.cortex.session.accessToken") for page in (first, second)}
        assert len(tokens) == 1, "both tabs hold the refreshed session"

        # Past the first token's expiry: both streams moved to the new token and stayed live.
        first.wait_for_timeout(max(0.0, TOKEN_SECONDS + 1 - (time.monotonic() - signed_in_at)) * 1000)
        site.post("bob", "after the first token expired", conversation)
        for page in (first, second):
            page.wait_for_selector(".message .text:text-is('after the first token expired')")
            assert texts(page, ".message .text") == ["to both tabs", "after the first token expired"]
            assert page.locator("#connection").get_attribute("data-state") == "live"

        # The rotation goes on: the next refresh uses the new refresh token and succeeds too.
        wait_until(lambda: first.wait_for_timeout(100) or len(refreshes) >= 2, timeout=TOKEN_SECONDS + 10)
        first.wait_for_timeout(1000)
        assert refreshes == [200, 200]

        # Signing out in one tab signs out the other.
        first.locator("#account summary").click()
        first.get_by_role("button", name="Sign out").click()
        for page in (first, second):
            page.wait_for_selector('#connection[data-state="signed_out"]')
            page.get_by_label("Password").wait_for()
        assert site.page_errors == []
    finally:
        context.close()
