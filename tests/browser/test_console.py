"""The console at /console/ in real Chromium, against one real system (core, turn worker) shared by
the module. Each test opens its own browser contexts (a context is a device: its own storage and
cookies) and acts as a person does: labels, buttons, the keyboard."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx2
import pytest

from tests.browser.console_site import ConsoleSite, console_site, texts, wait_live
from tests.mcp.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

HOSTILE = ("<img src=x onerror=alert(1)>", "[x](javascript:alert(1))")
# 300 echo chunks, 150 ms apart: about 45 s, so stopping it is never a race with its end (it is stopped
# within seconds; a loaded machine only makes it take longer).
LONG = " ".join(f"word{n}" for n in range(300))


@pytest.fixture(scope="module")
def site() -> Iterator[ConsoleSite]:
    with console_site(ECHO_DELAY_MS="150") as running_site:
        running_site.workspace_id = running_site.workspace("alice", "Team")  # type: ignore[attr-defined]
        yield running_site


@pytest.fixture(autouse=True)
def no_page_errors(site: ConsoleSite) -> Iterator[None]:
    """No test may leave an uncaught script error or a dialog (an alert would be an injection)."""
    site.page_errors.clear()
    yield
    assert site.page_errors == []


def activity(page) -> list[str]:
    page.goto(page.url.split("#")[0] + "#/activity")
    page.wait_for_selector("h2:has-text('Activity')")
    return texts(page, ".activity .event-text")


def test_console_is_served_with_a_strict_policy_and_only_its_own_assets(site: ConsoleSite):
    response = httpx2.get(f"{site.core_url}/console/")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'" and directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert assets and all(asset.startswith(("/static/", "#")) for asset in assets), assets
    for asset in ("/static/cortex/client.js", "/static/console/console.js", "/static/console/dom.js"):
        script = httpx2.get(f"{site.core_url}{asset}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|eval\(", script.text)
        imports = re.findall(r"^import .* from '([^']+)';", script.text, flags=re.M)
        assert all(module.startswith(("./", "../")) for module in imports), imports  # nothing from elsewhere
    assert httpx2.head(f"{site.core_url}/console/").status_code == 200


def test_sign_in_refuses_a_wrong_password_and_keeps_no_token_in_storage(site: ConsoleSite):
    context = site.new_context()
    try:
        page = site.open_console(context)
        page.get_by_label("Email").fill("alice@example.com")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=Wrong email or password.")
        page.get_by_label("Password").fill("correct-horse-battery-staple")
        page.get_by_label("Password").press("Enter")  # the keyboard alone signs in
        wait_live(page)
        stored = page.evaluate(
            "JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage}) + document.cookie"
        )
        token = page.evaluate("window.cortex.session.accessToken")
        refresh = page.evaluate("window.cortex.session.refreshToken")
        assert token not in stored and refresh not in stored and "eyJ" not in stored
        # Features the server does not have (yet) are not offered: a 404 from /inbox hides the inbox.
        nav = page.locator("#nav").inner_text()
        assert "Activity" in nav
        inbox = httpx2.get(f"{site.core_url}/inbox", headers=site.auth("alice")).status_code
        assert ("Inbox" in nav) == (inbox == 200)
        memory = httpx2.get(f"{site.core_url}/memory", headers=site.auth("alice")).status_code
        assert ("My memory" in nav) == (memory == 200)
    finally:
        context.close()


def test_two_users_see_live_only_their_own(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "alice and bob", with_=("bob",))
    alice_context, charlie_context = site.new_context(), site.new_context()
    try:
        alice = site.sign_in(alice_context, "alice", "#/activity")
        charlie = site.sign_in(charlie_context, "charlie", "#/activity")
        site.post("bob", "bob to alice, privately", conversation)
        site.post("charlie", "charlie's note to herself")
        site.post("alice", "alice's note to herself")
        wait_until(lambda: "alice's note to herself" in texts(alice, ".activity .event-text"), timeout=60)
        wait_until(lambda: "charlie's note to herself" in texts(charlie, ".activity .event-text"), timeout=60)
        alice_sees, charlie_sees = texts(alice, ".activity .event-text"), texts(charlie, ".activity .event-text")
        assert "bob to alice, privately" in alice_sees and "charlie's note to herself" not in alice_sees
        assert charlie_sees == ["charlie's note to herself"]
        # Who said what, live in the conversation view.
        alice.goto(f"{site.url}/console/#/c/{conversation}")
        alice.wait_for_selector(".message .text:text-is('bob to alice, privately')")
        site.post("bob", "and live too", conversation)
        item = alice.locator(".message", has_text="and live too")
        item.wait_for()
        assert item.locator(".who").inner_text().startswith(f"Participant {site.user_ids['bob'][:8]}")
        assert "and live too" not in texts(charlie, ".activity .event-text")
    finally:
        alice_context.close()
        charlie_context.close()


def test_a_network_cut_shows_the_missed_events_once(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "cut", with_=("bob",))
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{conversation}")
        page.evaluate("window.states = []; window.cortex.on('state', (s) => window.states.push(s)); 1")
        site.post("bob", "before the cut", conversation)
        page.wait_for_selector(".message .text:text-is('before the cut')")
        site.proxy.cut()
        site.post("bob", "missed during the cut", conversation)
        wait_until(lambda: "reconnecting" in page.evaluate("window.states"), timeout=60)
        wait_live(page)
        site.post("bob", "after the cut", conversation)
        page.wait_for_selector(".message .text:text-is('after the cut')")
        assert texts(page, ".message .text") == ["before the cut", "missed during the cut", "after the cut"]
        assert activity(page)[:3] == ["after the cut", "missed during the cut", "before the cut"]
        # A successor stream that resumes from further back (as one opened by a tab that saw less
        # does) replays events already shown: the client drops them by id.
        first_id = page.evaluate("[...window.cortex._seen][0]")
        page.evaluate("(id) => { window.cortex._lastId = id; window.cortex._openStream(); }", first_id)
        page.wait_for_timeout(1500)
        wait_live(page)
        site.post("bob", "after the replay", conversation)
        wait_until(lambda: texts(page, ".activity .event-text")[:1] == ["after the replay"], timeout=60)
        assert texts(page, ".activity .event-text")[:4] == [
            "after the replay",
            "after the cut",
            "missed during the cut",
            "before the cut",
        ]
    finally:
        context.close()


def test_an_echo_turn_streams_in_and_is_cancelled(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "echo", responder="echo", with_=("bob",))
    alice_context, bob_context = site.new_context(), site.new_context()
    try:
        alice = site.sign_in(alice_context, "alice", f"#/c/{conversation}")
        bob = site.sign_in(bob_context, "bob", f"#/c/{conversation}")
        composer = alice.get_by_label("Write a message")
        composer.fill("short answer please")
        composer.press("Enter")
        done = alice.locator(".message.assistant[data-status='completed']")
        done.wait_for(timeout=60_000)
        assert done.locator(".text").inner_text() == "short answer please"
        assert alice.locator(".message.mine .who").first.inner_text().startswith("alice (you)")

        composer.fill(LONG)
        composer.press("Enter")
        streaming = alice.locator(".message.assistant.streaming")
        streaming.wait_for(timeout=60_000)
        wait_until(lambda: len(streaming.locator(".text").inner_text()) > 20, timeout=60)
        # Bob, a participant on another device, sees the same answer streaming in.
        bob.locator(".message.assistant.streaming").wait_for(timeout=60_000)
        alice.get_by_role("button", name="Stop").click()
        stopped = alice.locator(".message.assistant[data-status='cancelled']")
        stopped.wait_for(timeout=60_000)
        partial = stopped.locator(".text").inner_text()
        assert partial and LONG.startswith(partial) and len(partial) < len(LONG)
        assert stopped.locator(".status").inner_text() == "Stopped."
        bob.locator(".message.assistant[data-status='cancelled']").wait_for(timeout=60_000)
        assert alice.get_by_role("button", name="Stop").count() == 0
    finally:
        alice_context.close()
        bob_context.close()


def test_hostile_markup_from_people_and_the_model_renders_as_text(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "hostile", responder="echo", with_=("bob",))
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{conversation}")
        answered = page.locator(".message.assistant[data-status='completed']")
        for count, content in enumerate(HOSTILE, start=1):
            site.post("bob", content, conversation)  # the echo responder answers it back: model output too
            # Its answer before the next post: with `queue`, a second post may otherwise come before the
            # first answer, and the page (rightly) shows messages in time order.
            wait_until(lambda count=count: answered.count() == count, timeout=60)
        assert texts(page, ".message .text") == [HOSTILE[0], HOSTILE[0], HOSTILE[1], HOSTILE[1]]
        assert page.locator("main img").count() == 0
        assert page.locator("a[href^='javascript']").count() == 0
        assert page.locator("main a").count() == 0
        assert activity(page)[:2] == [HOSTILE[1], HOSTILE[1]]
        assert page.locator("main img").count() == 0
        # The policy itself refuses HTML strings: Trusted Types make innerHTML throw.
        outcome = page.evaluate(
            "() => { try { document.body.innerHTML = '<img src=x>'; return 'assigned'; } catch (e) { return e.name; } }"
        )
        assert outcome == "TypeError"
    finally:
        context.close()


def test_reopening_after_close_shows_what_was_missed(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "away", with_=("bob",))
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{conversation}")
        site.post("bob", "seen before closing", conversation)
        page.wait_for_selector(".message .text:text-is('seen before closing')")
        page.close()  # the last tab: the session is gone with it (tokens lived in memory only)
        site.post("bob", "missed one", conversation)
        site.post("bob", "missed two", conversation)
        page = site.sign_in(context, "alice", "#/activity")
        nav_count = page.locator("#nav a[href='#/activity'] .count")  # the missed count (the inbox's is apart)
        wait_until(
            lambda: texts(page, ".activity .event.missed .event-text")[:2] == ["missed two", "missed one"], timeout=60
        )
        missed = texts(page, ".activity .event.missed .event-text")
        assert missed.count("missed one") == 1 and missed.count("missed two") == 1
        assert "seen before closing" not in missed, "resumed from the last event seen, not from the start"
        assert nav_count.count() == 0 or nav_count.first.inner_text() != "0"
        page.goto(f"{site.url}/console/#/c/{conversation}")
        page.wait_for_selector(".message .text:text-is('missed two')")
        assert texts(page, ".message .text") == ["seen before closing", "missed one", "missed two"]
    finally:
        context.close()


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => !el.closest('[hidden]') && !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
  .map((el) => el.outerHTML)"""


def test_an_owner_registers_an_expert_and_every_control_is_labelled(site: ConsoleSite):
    conversation = site.conversation("alice", site.workspace_id, "labelled", responder="echo")
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{conversation}")
        page.get_by_text("Settings and participants").click()
        assert page.evaluate(UNLABELLED) == []
        page.goto(f"{site.url}/console/#/experts")
        section = page.locator("section.card", has=page.get_by_role("heading", name="Team"))
        section.get_by_text("Register an expert").click()
        section.get_by_label("Name").fill("ghost")
        section.get_by_label("MCP URL").fill("http://127.0.0.1:9/mcp")  # nothing listens: saved as unreachable
        section.get_by_label("Authentication").select_option("none")
        section.get_by_role("button", name="Register expert").click()
        card = section.locator(".expert", has_text="ghost")
        card.wait_for(timeout=60_000)
        assert "unreachable" in card.locator(".badge").inner_text()
        experts = site.api("alice", "GET", f"/config/workspace/{site.workspace_id}/experts")["experts"]
        assert [(e["name"], e["auth"], e["status"]) for e in experts] == [("ghost", "none", "unreachable")]
        assert page.evaluate(UNLABELLED) == []
        card.get_by_role("button", name="Remove").click()
        card.wait_for(state="detached")
        assert site.api("alice", "GET", f"/config/workspace/{site.workspace_id}/experts")["experts"] == []
        # Bob owns no workspace: no experts for him, and the conversation's settings are not his to change.
        bob_context = site.new_context()
        bob = site.sign_in(bob_context, "bob")
        assert "Experts" not in bob.locator("#nav").inner_text()
        bob_context.close()
    finally:
        context.close()


def test_the_usage_view_shows_the_persons_tokens_and_budget(site: ConsoleSite):
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", "#/usage")
        budget = page.locator("#usage-budget")
        wait_until(lambda: "This month:" in budget.inner_text(), timeout=60)
        assert "tokens" in budget.inner_text()
        assert page.locator("table.usage th").all_inner_texts()[1:] == [
            "turns",
            "input tokens",
            "output tokens",
            "tool calls",
        ]
        page.get_by_label("Group by").select_option("model")
        page.locator("table.usage thead").wait_for(timeout=60_000)
    finally:
        context.close()
