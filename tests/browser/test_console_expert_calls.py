"""Expert calls in the console, in real Chromium (CONTRACT.md, "Expert calls"): an expert's image drawn
from a blob: URL of its bytes under the page's policy, links as https anchors only, a progress bar
on a running call, and a question's form pre-filled with its defaults. The SDK-built expert of
tests/experts/task_expert.py runs as a process, registered as `lab` (2026-07-28) and `old`
(2025-11-25, whose held stream carries progress)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.console_site import ConsoleSite, console_site
from tests.experts.conftest import task_expert

# What the console draws (the API under it runs in both passes): SQLite pass only, as the other browser tests.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

TOOLS = ("picture", "links", "steps", "preferences")


@pytest.fixture(scope="module")
def site() -> Iterator[ConsoleSite]:
    with console_site() as running_site, task_expert() as lab, task_expert(legacy=True) as old:
        workspace_id = running_site.workspace("alice", "Experts")
        for name, expert in (("lab", lab), ("old", old)):
            running_site.api(
                "alice",
                "POST",
                f"/config/workspace/{workspace_id}/experts",
                json={"name": name, "url": expert.url, "auth": "none", "tool_policy": dict.fromkeys(TOOLS, "auto")},
            )
        running_site.conversation_id = running_site.conversation("alice", workspace_id, "calls")  # type: ignore[attr-defined]
        yield running_site


@pytest.fixture(autouse=True)
def no_page_errors(site: ConsoleSite) -> Iterator[None]:
    site.page_errors.clear()
    yield
    assert site.page_errors == []


def test_images_are_drawn_from_blob_urls_and_only_https_links_are_links(site: ConsoleSite):
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{site.conversation_id}")  # type: ignore[attr-defined]
        site.post("alice", '/lab picture {"size": 100}', site.conversation_id)  # type: ignore[attr-defined]
        image = page.locator(".tools img.tool-image")
        image.wait_for(timeout=20_000)
        assert image.get_attribute("src").startswith("blob:")
        site.post("alice", "/lab links {}", site.conversation_id)  # type: ignore[attr-defined]
        link = page.locator(".tools .blocks a")
        link.wait_for(timeout=20_000)
        assert link.count() == 1, "only the https link is a link"
        assert link.get_attribute("href") == "https://example.com/report.pdf"
        assert link.get_attribute("rel") == "noopener noreferrer"
        assert page.locator(".tools .blocks code", has_text="javascript:alert(1)").count() == 1
    finally:
        context.close()


def test_a_running_call_shows_a_progress_bar(site: ConsoleSite):
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", f"#/c/{site.conversation_id}")  # type: ignore[attr-defined]
        site.post("alice", '/old steps {"count": 20, "delay_ms": 250}', site.conversation_id)  # type: ignore[attr-defined]
        bar = page.locator(".tools .tool-progress progress")
        bar.wait_for(timeout=20_000)
        assert bar.get_attribute("max") == "20"
        page.locator(".message.assistant[data-status='completed']").last.wait_for(timeout=30_000)
    finally:
        context.close()


def test_a_question_form_is_pre_filled_with_its_defaults(site: ConsoleSite):
    context = site.new_context()
    try:
        page = site.sign_in(context, "alice", "#/inbox")
        site.post("alice", "/lab preferences {}", site.conversation_id)  # type: ignore[attr-defined]
        form = page.locator("form.question")
        form.wait_for(timeout=20_000)
        assert form.locator("input[name='count']").input_value() == "3"
        assert form.locator("select[name='color']").input_value() == "green"
        assert form.locator("input[name='subscribe']").is_checked()
        assert form.locator("input[name='name']").input_value() == ""
    finally:
        context.close()
