"""Nothing lost: inputs accepted by a real core reach a real memory service exactly once, whatever
happens to the memory service meanwhile; deletions follow; /context and /readyz report honestly."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx2
import pytest

from tests.mcp.conftest import (
    PASSWORD,
    Stack,
    memory_history,
    memory_history_if_up,
    outbox_pending,
    stack,
    wait_until,
)
from tests.servers import ServerProcess, create_user, create_users, running, running_together

pytestmark = pytest.mark.e2e


def login(base_url: str, email: str) -> tuple[str, str]:
    response = httpx2.post(f"{base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    response.raise_for_status()
    body = response.json()
    return body["access_token"], body["claims"]["oid"]


def api(base_url: str, token: str) -> httpx2.Client:
    return httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def post_inputs(base_url: str, token: str, count: int, *, conversation_id: str | None = None) -> list[str]:
    ids = []
    with api(base_url, token) as client:
        for n in range(count):
            response = client.post("/input", json={"content": f"input number {n}", "conversation_id": conversation_id})
            assert response.status_code == 200, response.text
            ids.append(response.json()["data"]["id"])
    return ids


def history(services: Stack, user_id: str) -> list[dict]:
    return memory_history(services.memory_url, user_id)


def count_or_zero(services: Stack, user_id: str) -> int:
    """How many items memory holds; 0 while it cannot be reached (it is restarting)."""
    items = memory_history_if_up(services.memory_url, user_id)
    return 0 if items is None else len(items)


def assert_exactly_once(memory_url: str, database: dict[str, str], user_id: str, ids: list[str]) -> None:
    # Once nothing is pending, nothing is in flight either: no late duplicate or straggler can land.
    wait_until(lambda: outbox_pending(database) == 0, timeout=60)
    stored = [item["id"] for item in memory_history(memory_url, user_id)]
    assert len(stored) == len(ids), f"{len(stored)} items for {len(ids)} inputs"
    assert sorted(stored) == sorted(ids)


@pytest.mark.database_agnostic  # the same claim, retry and mark as the killed drain below, which runs here
def test_inputs_accepted_while_memory_is_down_reach_it_exactly_once_when_it_returns():
    with stack() as services:
        with running_together(
            services.core(), meanwhile=lambda: create_user("down@example.com", PASSWORD, env=services.env)
        ) as (core,):
            token, user_id = login(core.url, "down@example.com")
            ids = post_inputs(core.url, token, 100)
            with running_together(services.memory(), services.worker()):
                # Each look is a whole MCP session with the service that the drain is feeding: not too often.
                wait_until(lambda: count_or_zero(services, user_id) >= 100, timeout=40, interval=0.5)
                assert_exactly_once(services.memory_url, services.env, user_id, ids)


def test_memory_killed_in_the_middle_of_a_drain_still_ends_with_each_input_once():
    with stack() as services:
        # One entry per batch, one call at a time: 200 rounds of claim, call and mark take long
        # enough for the kill to land inside the drain (with batches of 10 it was sometimes over
        # before the test saw the first items).
        services.env["OUTBOX_CONCURRENCY"] = "1"
        services.env["OUTBOX_BATCH_SIZE"] = "1"
        with running_together(
            services.core(), meanwhile=lambda: create_user("kill@example.com", PASSWORD, env=services.env)
        ) as (core,):
            token, user_id = login(core.url, "kill@example.com")
            ids = post_inputs(core.url, token, 200)
            # Started together (each is a Django start-up): the worker retries until memory listens.
            with running_together(services.memory(), services.worker()) as (memory, _):
                # The first items seen: the kill lands as early in the drain as the test can see it.
                wait_until(lambda: count_or_zero(services, user_id) >= 1, timeout=40, interval=0.02)
                seen = count_or_zero(services, user_id)
                memory.kill()
                assert seen < 200, "the kill must land in the middle of the drain"
                with running(services.memory()):
                    wait_until(lambda: count_or_zero(services, user_id) >= 200, timeout=40, interval=0.5)
                    assert_exactly_once(services.memory_url, services.env, user_id, ids)


def test_a_core_that_leaves_delivery_to_the_worker_wakes_it_at_each_commit():
    # MEMORY_DRAIN_BY_WORKER (run_cortex's group): the core drains nothing itself, and the worker
    # polls once a minute here, so only the core's wake-ups (loopback datagram / NOTIFY) deliver
    # within the bound. The second round starts after the worker has drained and gone back to waiting.
    with stack() as services:
        services.env.update(MEMORY_DRAIN_BY_WORKER="1", OUTBOX_POLL_SECONDS="60")
        with running_together(
            services.core(),
            services.memory(),
            services.worker(),
            meanwhile=lambda: create_user("woken@example.com", PASSWORD, env=services.env),
        ) as (core, _, _):
            token, user_id = login(core.url, "woken@example.com")
            ids = post_inputs(core.url, token, 3)
            wait_until(lambda: count_or_zero(services, user_id) >= 3, timeout=20, interval=0.2)
            time.sleep(1)  # the worker's look after a drain found nothing more: it waits for a wake-up
            ids += post_inputs(core.url, token, 3)
            wait_until(lambda: count_or_zero(services, user_id) >= 6, timeout=20, interval=0.2)
            assert_exactly_once(services.memory_url, services.env, user_id, ids)


@dataclass
class System:
    services: Stack
    core: ServerProcess
    memory: ServerProcess
    cognition: ServerProcess


@pytest.fixture(scope="module")
def system():
    """Core, memory and cognition processes on one fresh database, with two users."""
    with stack() as services:
        with running_together(
            services.memory(),
            services.cognition(),
            services.core(),
            meanwhile=lambda: create_users("ctx@example.com", "other@example.com", password=PASSWORD, env=services.env),
        ) as (memory, cognition, core):
            yield System(services, core, memory, cognition)


def test_deleting_a_conversation_removes_its_memory_items(system):
    services, core = system.services, system.core
    token, user_id = login(core.url, "ctx@example.com")
    with api(core.url, token) as client:
        workspace = client.post("/config/workspace", json={"name": "w"}).json()["workspace"]
        conversation = client.post("/config/conversation", json={"workspace_id": workspace["id"], "topic": "t"}).json()[
            "conversation"
        ]
        in_conversation = post_inputs(core.url, token, 3, conversation_id=conversation["id"])
        outside = post_inputs(core.url, token, 1)
        # Delivered by the core's own drain (no worker runs here), right after each commit.
        wait_until(lambda: {i["id"] for i in history(services, user_id)} >= {*in_conversation, *outside})
        assert client.delete(f"/config/conversation/{conversation['id']}").status_code == 204
    wait_until(lambda: {i["id"] for i in history(services, user_id)}.isdisjoint(in_conversation))
    assert set(outside) <= {item["id"] for item in history(services, user_id)}


@pytest.mark.database_agnostic  # the memory service's search: in-process on PostgreSQL
def test_context_returns_the_callers_relevant_items_and_nobody_elses(system):
    services, core = system.services, system.core
    token, user_id = login(core.url, "ctx@example.com")
    other_token, _ = login(core.url, "other@example.com")
    with api(core.url, token) as client:
        client.post("/input", json={"content": "The vaccination appointment is on Tuesday"})
        for n in range(5):
            client.post("/input", json={"content": f"random chatter {n}"})
    with api(core.url, other_token) as client:
        client.post("/input", json={"content": "my own vaccination record"})
    wait_until(lambda: any("vaccination" in i["content"] for i in history(services, user_id)))

    with api(core.url, token) as client:
        response = client.get("/context", params={"query": "vaccination appointment", "limit": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user_id"] == user_id and body["query"] == "vaccination appointment"
        assert [item["content"] for item in body["context"]] == ["The vaccination appointment is on Tuesday"]
        assert client.get("/context", params={"limit": 2}).json()["count"] == 2
        # The user id comes from the token; a user_id parameter is ignored.
        assert client.get("/context", params={"user_id": str(uuid.uuid4())}).json()["user_id"] == user_id
        assert client.get("/context", params={"conversation_id": str(uuid.uuid4())}).status_code == 404
        assert client.get("/context", params={"limit": 0}).status_code == 400
    assert httpx2.get(f"{core.url}/context", timeout=10).status_code == 401


@pytest.mark.database_agnostic  # health of a stopped service: nothing the database decides
def test_readyz_and_context_report_a_stopped_cognition_service(system):
    token, _ = login(system.core.url, "ctx@example.com")
    ready = httpx2.get(f"{system.core.url}/readyz", timeout=15)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "channel_layer": "ok", "memory": "ok", "cognition": "ok"}

    system.cognition.stop()
    try:
        # /readyz reuses its result for READYZ_CACHE_SECONDS (1 s here): the change shows soon after.
        wait_until(lambda: httpx2.get(f"{system.core.url}/readyz", timeout=15).status_code == 503, timeout=15)
        not_ready = httpx2.get(f"{system.core.url}/readyz", timeout=15)
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["fields"]["failing"] == ["cognition"]
        with api(system.core.url, token) as client:
            down = client.get("/context", params={"query": "anything"})
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "service_unavailable"
    finally:
        system.cognition.start()
    # The core's long-lived client reconnects to the restarted service by itself.
    with api(system.core.url, token) as client:
        assert client.get("/context").status_code == 200
    wait_until(lambda: httpx2.get(f"{system.core.url}/readyz", timeout=15).status_code == 200, timeout=15)
