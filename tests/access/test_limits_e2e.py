"""Limits on what one user can send and ask for, against real processes (issue 8): JSON nesting
and the /context rate, with the memory and cognition services running."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, Stack, http_client, stack
from tests.servers import create_users, running_together
from tests.streaming.clients import login

# Run in the SQLite pass only: request limits and throttles, before or beside the database.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[Stack, str]]:
    with stack() as env:
        env.env["CONTEXT_RATE"] = "3/min"
        with running_together(
            env.memory(),
            env.cognition(),
            env.core(),
            meanwhile=lambda: create_users("alice@example.com", "bob@example.com", password=PASSWORD, env=env.env),
        ) as (_, _, core):
            yield env, core.url


def nested(depth: int) -> str:
    """A JSON object nested `depth` levels (built as text: json.dumps itself stops near 1,000)."""
    return '{"d":' * (depth - 1) + "{}" + "}" * (depth - 1)


def post_input(url: str, token: str, metadata: str) -> httpx2.Response:
    body = '{"content": "deep", "metadata": ' + metadata + "}"
    return httpx2.post(
        f"{url}/input",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )


async def test_metadata_nested_deeper_than_32_is_a_400_and_32_reaches_memory(system):
    env, url = system
    token = login(url, "alice@example.com", PASSWORD)
    for depth in (33, 1000, 3000):
        refused = post_input(url, token, nested(depth))
        assert refused.status_code == 400, (depth, refused.text)
        assert set(refused.json()) == {"error"} and refused.json()["error"]["code"] in {
            "invalid_input",
            "malformed_body",
        }
    accepted = post_input(url, token, nested(32))
    assert accepted.status_code == 200, accepted.text
    item_id = accepted.json()["data"]["id"]
    user_id = httpx2.get(f"{url}/auth/verify", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()[
        "user_id"
    ]

    # The outbox delivers it: 32 levels are within every limit downstream.
    async with http_client(env.memory_url) as memory:
        for _ in range(60):
            history = json.loads((await memory.read_resource(f"history/{user_id}")).contents[0].text)
            if history:
                break
            await asyncio.sleep(0.5)
    assert [item["id"] for item in history] == [item_id]
    assert json.dumps(history[0]["metadata"]).count("{") == 32


def test_context_is_limited_per_user(system):
    env, url = system
    alice = {"Authorization": f"Bearer {login(url, 'alice@example.com', PASSWORD)}"}
    bob = {"Authorization": f"Bearer {login(url, 'bob@example.com', PASSWORD)}"}
    statuses = [
        httpx2.get(f"{url}/context", params={"query": "x"}, headers=bob, timeout=30).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    limited = httpx2.get(f"{url}/context", headers=bob, timeout=30)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "throttled"
    assert int(limited.headers["Retry-After"]) > 0
    assert httpx2.get(f"{url}/context", headers=alice, timeout=30).status_code == 200  # her own budget
