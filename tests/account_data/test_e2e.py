"""`/memory` and `/account` end to end: a real core (uvicorn), the real memory and cognition
services, each of core and memory on a database of its own (as a deployment may run them)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, Stack, memory_service, outbox_pending, stack, wait_until
from tests.servers import ServerProcess, core_server, create_users, fresh_database, manage, running_together
from tests.streaming.clients import SSEStream

pytestmark = pytest.mark.e2e


@dataclass
class Site:
    services: Stack
    memory_db: dict[str, str]
    core: ServerProcess
    memory: ServerProcess

    @property
    def memory_env(self) -> dict[str, str]:
        return {**self.services.env, **self.memory_db}

    def login(self, email: str) -> tuple[str, str, str]:
        response = httpx2.post(f"{self.core.url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
        response.raise_for_status()
        body = response.json()
        return body["access_token"], body["refresh_token"], body["claims"]["oid"]

    def api(self, token: str) -> httpx2.Client:
        return httpx2.Client(base_url=self.core.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with stack() as services, fresh_database() as memory_db:
        emails = (
            "alice@example.com",
            "charlie@example.com",
            "big@example.com",
            "leaver@example.com",
            "bob@example.com",
        )
        memory = memory_service({**services.env, **memory_db}, port=services.memory_port)
        core = core_server(env=services.env, server="uvicorn")
        with running_together(
            memory,
            services.cognition(),
            core,
            meanwhile=lambda: create_users(*emails, password=PASSWORD, env=services.env),
        ):
            yield Site(services, memory_db, core, memory)


def context_ids(client: httpx2.Client, query: str) -> list[str]:
    response = client.get("/context", params={"query": query, "limit": 5})
    assert response.status_code == 200, response.text
    assert "error" not in response.json(), response.json()
    return [item["id"] for item in response.json()["context"]]


@pytest.mark.database_agnostic  # access rules: in-process on PostgreSQL (tests/mcp/test_user_memory_tools.py)
def test_outsider_gets_the_same_404_for_another_users_memory_item_on_read_change_and_delete(site: Site):
    alice, _, _ = site.login("alice@example.com")
    charlie, _, _ = site.login("charlie@example.com")
    with site.api(alice) as owner, site.api(charlie) as outsider:
        created = owner.post(
            "/memory", json={"content": "My bank PIN hint is the cat's birthday", "metadata": {"k": 1}}
        )
        assert created.status_code == 201, created.text
        item = created.json()["item"]
        assert item["content"].startswith("My bank PIN") and item["metadata"] == {"k": 1}
        missing = outsider.get("/memory/no-such-item")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        for response in (
            outsider.get(f"/memory/{item['id']}"),
            outsider.patch(f"/memory/{item['id']}", json={"content": "hijacked"}),
            outsider.delete(f"/memory/{item['id']}"),
        ):
            assert response.status_code == 404 and response.content == missing.content
        assert outsider.get("/memory").json()["items"] == []
        assert owner.get(f"/memory/{item['id']}").json()["item"]["content"] == item["content"]


@pytest.mark.database_agnostic  # in-process on PostgreSQL (tests/mcp/test_user_memory_tools.py)
def test_a_corrected_item_is_found_by_its_new_meaning_and_not_its_old_one(site: Site):
    alice, _, _ = site.login("alice@example.com")
    with site.api(alice) as client:
        for n in range(3):
            assert client.post("/memory", json={"content": f"Groceries: oat milk and {n} loaves"}).status_code == 201
        item = client.post("/memory", json={"content": "The dentist appointment is on Monday at nine"}).json()["item"]
        searched = client.get("/memory", params={"query": "dentist appointment", "limit": 3}).json()["items"]
        assert searched[0]["id"] == item["id"] and set(searched[0]["score_parts"]) >= {
            "similarity",
            "coverage",
            "exact",
        }
        assert item["id"] in context_ids(client, "when is the dentist")
        corrected = client.patch(f"/memory/{item['id']}", json={"content": "Piano lessons for Ava start in September"})
        assert corrected.status_code == 200 and corrected.json()["item"]["content"].startswith("Piano")
        assert context_ids(client, "music classes for my daughter")[0] == item["id"]
        assert item["id"] not in context_ids(client, "when is the dentist")
        old = client.get("/memory", params={"query": "dentist appointment"}).json()["items"]
        assert item["id"] not in [found["id"] for found in old]
        assert client.patch(f"/memory/{item['id']}", json={"content": ""}).status_code == 400


@pytest.mark.database_agnostic  # in-process on PostgreSQL (tests/mcp/test_user_memory_tools.py)
def test_a_deleted_item_is_gone_from_context_and_the_list_at_once(site: Site):
    alice, _, _ = site.login("alice@example.com")
    with site.api(alice) as client:
        item = client.post("/memory", json={"content": "The spare house key is under the blue flower pot"}).json()[
            "item"
        ]
        assert item["id"] in context_ids(client, "where is the spare key")  # the matrix is now held
        assert client.delete(f"/memory/{item['id']}").status_code == 204
        assert item["id"] not in context_ids(client, "where is the spare key")
        assert item["id"] not in [i["id"] for i in client.get("/memory", params={"limit": 100}).json()["items"]]
        assert client.delete(f"/memory/{item['id']}").status_code == 404


@pytest.mark.database_agnostic  # keyset pages: in-process on PostgreSQL (tests/mcp/test_user_memory_tools.py)
def test_the_list_pages_by_cursor_newest_first(site: Site):
    alice, _, _ = site.login("alice@example.com")
    with site.api(alice) as client:
        seen, cursor = [], None
        while True:
            page = client.get("/memory", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        everything = client.get("/memory", params={"limit": 100}).json()["items"]
        assert seen == [item["id"] for item in everything] and len(seen) >= 4
        assert client.get("/memory", params={"cursor": "garbage"}).status_code == 400


# --- export --------------------------------------------------------------------------------------

BULK_MEMORY = """
import uuid
from datetime import UTC, datetime, timedelta
from mcp_services.models import MemoryItem
user, start = uuid.UUID({user!r}), datetime(2025, 1, 1, tzinfo=UTC)
for offset in range(0, {count}, 5000):
    rows = []
    for n in range(offset, min(offset + 5000, {count})):
        moment = start + timedelta(minutes=n)
        content = f"Bulk note {{n}}: remember to water the tomatoes and call the plumber about the boiler."
        data = {{"id": f"bulk-{{n}}", "content": content, "timestamp": moment.isoformat(), "metadata": {{}}}}
        rows.append(MemoryItem(user_id=user, item_id=data["id"], content=content, data=data, timestamp=moment))
    MemoryItem.objects.bulk_create(rows)
"""

BULK_MESSAGES = """
from datetime import UTC, datetime, timedelta
from accounts.models import User
from workspaces.models import Conversation, Message, Workspace
user = User.objects.get(email={email!r})
workspace = Workspace.objects.create(owner=user, name="big")
conversation = Conversation.objects.create(workspace=workspace, topic="long")
conversation.participants.add(user)
start = datetime(2025, 1, 1, tzinfo=UTC)
Message.objects.bulk_create(
    Message(conversation=conversation, sender=user, content=f"message {{n}} " + "x" * 200, created_at=start + timedelta(seconds=n))
    for n in range({count})
)
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def reset_peak(pid: int) -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def download(client: httpx2.Client) -> tuple[httpx2.Response, list[dict], int]:
    lines, size = [], 0
    with client.stream("GET", "/account/export") as response:
        for line in response.iter_lines():
            size += len(line) + 1
            if line:
                lines.append(json.loads(line))
    return response, lines, size


def test_the_export_of_a_large_account_streams_with_bounded_memory(site: Site):
    token, _, user_id = site.login("big@example.com")
    items, messages = 20_000, 2_000
    manage("shell", "-c", BULK_MEMORY.format(user=user_id, count=items), env=site.memory_env)
    manage("shell", "-c", BULK_MESSAGES.format(email="big@example.com", count=messages), env=site.services.env)
    with site.api(token) as client:
        download(client)  # warm: code paths, connections, the first page's buffers
        core_pid, memory_pid = site.core.process.pid, site.memory.process.pid
        reset_peak(core_pid)
        reset_peak(memory_pid)
        core_before, memory_before = peak_rss_mb(core_pid), peak_rss_mb(memory_pid)
        response, lines, size = download(client)
        core_growth, memory_growth = peak_rss_mb(core_pid) - core_before, peak_rss_mb(memory_pid) - memory_before
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].startswith('attachment; filename="cortex-export-')
    assert "content-length" not in response.headers  # streamed
    kinds = [line["type"] for line in lines]
    assert kinds[:2] == ["export", "profile"] and kinds[-1] == "end"
    assert kinds.count("memory_item") == items and kinds.count("message") == messages
    assert lines[-1]["data"]["counts"]["memory_item"] == items
    assert size > 4_000_000
    print(f"export of {size:,} bytes: peak RSS growth core {core_growth:.1f} MB, memory {memory_growth:.1f} MB")
    # Holding the whole export (5+ MB of text, many times that as Python objects) would show here.
    assert core_growth < 15 and memory_growth < 15, (core_growth, memory_growth, size)


@pytest.mark.database_agnostic  # a throttle, before the database
def test_the_export_is_limited_per_user(site: Site):
    token, _, _ = site.login("charlie@example.com")
    with site.api(token) as client:
        statuses = [client.get("/account/export").status_code for _ in range(6)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429


# --- erasure -------------------------------------------------------------------------------------


def every_row(database: dict[str, str]) -> Iterator[tuple[str, tuple]]:
    """(table, row) for every row of every table of a server's database."""
    if database.get("DATABASE_URL"):
        import psycopg

        connect: Any = lambda: psycopg.connect(database["DATABASE_URL"])  # noqa: E731
        list_tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    else:
        connect = lambda: contextlib.closing(sqlite3.connect(database["SQLITE_PATH"], timeout=20))  # noqa: E731
        list_tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
    with connect() as conn:
        for (table,) in list(conn.execute(list_tables)):
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                yield table, row


def rows_naming(database: dict[str, str], needles: list[str]) -> dict[str, int]:
    """How many rows of each table name any of `needles` (the user's id in both spellings, their
    email), every row read whole as text."""
    found: dict[str, int] = {}
    for table, row in every_row(database):
        if any(needle in str(row).lower() for needle in needles):
            found[table] = found.get(table, 0) + 1
    return found


def test_erasure_leaves_nothing_in_either_database_and_ends_tokens_and_streams(site: Site):
    token, refresh, user_id = site.login("leaver@example.com")
    bob_token, _, bob_id = site.login("bob@example.com")
    needles = [user_id, uuid.UUID(user_id).hex, "leaver@example.com"]
    with site.api(token) as client:
        workspace = client.post("/config/workspace", json={"name": "mine"}).json()["workspace"]
        conversation = client.post(
            "/config/conversation",
            json={"workspace_id": workspace["id"], "topic": "t", "participant_ids": [bob_id], "responder": "echo"},
        ).json()["conversation"]
        for n in range(3):
            sent = client.post("/input", json={"content": f"remember thing {n}", "conversation_id": conversation["id"]})
            assert sent.status_code == 200, sent.text
        assert client.post("/input", json={"content": "a note without a conversation"}).status_code == 200
        assert client.post("/memory", json={"content": "I prefer window seats"}).status_code == 201
        assert client.post("/output/ticket").status_code in (200, 201)
        wait_until(lambda: outbox_pending(site.services.env) == 0, timeout=30)
        assert len(client.get("/memory", params={"limit": 100}).json()["items"]) == 5
        assert rows_naming(site.memory_db, needles), "the memory database holds the user's items"
        stream = SSEStream(site.core.url, token=token)
        ended = threading.Event()

        def read_until_the_end() -> None:
            with contextlib.suppress(Exception):
                while True:
                    stream.event(timeout=60)
            ended.set()

        threading.Thread(target=read_until_the_end, daemon=True).start()
        wrong = client.request("DELETE", "/account", json={"password": "not it"})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_credentials"
        erased = client.request("DELETE", "/account", json={"password": PASSWORD})
        assert erased.status_code == 204, erased.text
        assert ended.wait(30), "the open stream was not ended"
        stream.close()
        assert client.get("/auth/verify").status_code == 401
    assert httpx2.post(f"{site.core.url}/auth/refresh", json={"refresh_token": refresh}, timeout=10).status_code == 401
    wait_until(lambda: outbox_pending(site.services.env) == 0, timeout=30)
    deadline = time.monotonic() + 30
    while (
        set(rows_naming(site.services.env, needles)) - {"audit_auditentry"} or rows_naming(site.memory_db, needles)
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    # The audit log keeps the account's entries (what happened, when), with nothing personal but its id.
    assert set(rows_naming(site.services.env, needles)) <= {"audit_auditentry"}, "core database"
    kept = [
        row
        for table, row in every_row(site.services.env)
        if table == "audit_auditentry" and any(needle in str(row).lower() for needle in needles)
    ]
    assert {"auth.login", "account.erased"} <= {value for row in kept for value in row if isinstance(value, str)}
    assert not any("127.0.0.1" in str(row) for row in kept), "the audit entries were not stripped"
    assert rows_naming(site.memory_db, needles) == {}, "memory database"
    with site.api(bob_token) as bob:  # the other participant lost the deleted owner's conversation too
        assert bob.get("/config/workspace").status_code == 200
