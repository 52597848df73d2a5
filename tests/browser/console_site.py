"""One running system for the console's browser tests: a real core (uvicorn) behind a cuttable
proxy, the real turn worker, users, and Chromium; helpers that act as a person does in the page
(labels and buttons) and as the other people do through the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tests.browser.chromium import CHROMIUM_FLAGS, CuttableProxy, chromium_or_skip
from tests.servers import core_server, create_users, fresh_database, manage_command, running_together, server_env

PASSWORD = "correct-horse-battery-staple"
USERS = ("alice@example.com", "bob@example.com", "charlie@example.com")


@dataclass
class ConsoleSite:
    core_url: str  # the core itself, for the API calls of the other people
    url: str  # what the browser uses: through the proxy that can cut every connection
    proxy: CuttableProxy
    browser: Any
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)
    page_errors: list[str] = field(default_factory=list)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def login(self, who: str) -> None:
        body = {"email": f"{who}@example.com", "password": PASSWORD}
        login = httpx2.post(f"{self.core_url}/auth/login", json=body, timeout=60).json()
        self.tokens[who] = login["access_token"]
        self.user_ids[who] = login["claims"]["oid"]

    def api(self, who: str, method: str, path: str, **kwargs: Any) -> dict:
        response = httpx2.request(method, f"{self.core_url}{path}", headers=self.auth(who), timeout=30, **kwargs)
        if response.status_code == 401:  # short-lived tokens in some modules: log in again
            self.login(who)
            response = httpx2.request(method, f"{self.core_url}{path}", headers=self.auth(who), timeout=30, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else {}

    def workspace(self, who: str, name: str) -> str:
        return self.api(who, "POST", "/config/workspace", json={"name": name})["workspace"]["id"]

    def conversation(self, who: str, workspace_id: str, topic: str, *, responder: str = "none", with_: tuple = ()):
        body = {
            "workspace_id": workspace_id,
            "topic": topic,
            "responder": responder,
            "participant_ids": [self.user_ids[other] for other in with_],
        }
        return self.api(who, "POST", "/config/conversation", json=body)["conversation"]["id"]

    def post(self, who: str, content: str, conversation_id: str | None = None) -> dict:
        return self.api(who, "POST", "/input", json={"content": content, "conversation_id": conversation_id})

    def new_context(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1200, "height": 800})
        context.set_default_timeout(60_000)  # a liveness bound for every action: the machine may be loaded
        context.on("page", self._watch)
        return context

    def _watch(self, page: Any) -> None:
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        """The console asks before deleting (confirm: yes); an alert would be injected script."""
        if dialog.type == "confirm":
            dialog.accept()
        else:
            self.page_errors.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    def open_console(self, context: Any, hash_: str = "") -> Any:
        page = context.new_page()
        page.goto(f"{self.url}/console/{hash_}")
        return page

    def sign_in(self, context: Any, who: str, hash_: str = "") -> Any:
        """A new tab of `context` on the console, signed in as `who` through the form, live."""
        page = self.open_console(context, hash_)
        page.get_by_label("Email").fill(f"{who}@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_live(page)
        return page


def wait_live(page: Any, timeout: float = 60_000) -> None:
    """The stream is live and the console has started: its navigation is drawn once the directory
    and the features are known, which may come after the stream (they race)."""
    page.wait_for_selector('#connection[data-state="live"]', timeout=timeout)
    page.wait_for_selector("#nav a[href='#/activity']", timeout=timeout)


def texts(page: Any, selector: str) -> list[str]:
    return page.locator(selector).all_inner_texts()


@contextlib.contextmanager
def console_site(**env_overrides: str) -> Iterator[ConsoleSite]:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with fresh_database() as database:
        env = server_env(
            **database,
            SSE_RETRY_MS="300",
            SSE_HEARTBEAT_SECONDS="1",
            MEMORY_DRAIN_ON_COMMIT="0",
            LOG_LEVEL="WARNING",
            INPUT_RATE="100000/min",
            TURN_POLL_MS="50",
            **env_overrides,
        )
        create_users(*USERS, password=PASSWORD, env=env)
        core = core_server(env=env, server="uvicorn")
        worker = manage_command(
            "turn_worker", env={**env, "CORTEX_CORE_URL": core.url}, port=0, ready_line="turn worker: running"
        )
        with running_together(core, worker), sync_playwright() as playwright:
            proxy = CuttableProxy(core.port)
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                site = ConsoleSite(core_url=core.url, url=proxy.url, proxy=proxy, browser=browser)
                for email in USERS:
                    site.login(email.split("@")[0])
                yield site
            finally:
                browser.close()
                proxy.close()
