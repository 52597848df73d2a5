"""The memory and cognition services as real processes, started by their management commands."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.conftest import COGNITION_TOKEN, TOKEN, http_client, memory_service, stack
from tests.servers import ROOT, free_port, running, server_env

# Run in the SQLite pass only: the services' transports, tokens and signals; their tools' SQL runs on PostgreSQL in-process (tests/mcp/test_memory_tools.py).
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture(scope="module")
def services():
    """One database with memory and cognition processes for this module's tests."""
    with stack() as env, running(env.memory()), running(env.cognition()):
        yield env


async def test_every_memory_tool_and_resource_over_http(services):
    user = str(uuid.uuid4())
    async with http_client(services.memory_url) as memory:
        stored = await memory.call_tool(
            "store_input",
            {
                "user_id": user,
                "input_data": {"id": "m1", "content": "older note about invoices", "timestamp": "2026-01-01T00:00:00Z"},
            },
        )
        assert stored.structured_content == {"status": "stored", "user_id": user, "item_id": "m1"}
        retry = await memory.call_tool("store_input", {"user_id": user, "input_data": {"id": "m1", "content": "x"}})
        assert retry.structured_content["item_id"] == "m1"
        await memory.call_tool("store_input", {"user_id": user, "input_data": {"id": "m2", "content": "newer chat"}})

        history = json.loads((await memory.read_resource(f"history/{user}")).contents[0].text)
        assert [item["id"] for item in history] == ["m1", "m2"]
        assert history[0]["content"] == "older note about invoices", "a retry changes nothing"
        newest = json.loads((await memory.read_resource(f"history/{user}/limit/1")).contents[0].text)
        assert [item["id"] for item in newest] == ["m2"]

        found = await memory.call_tool("search_memory", {"user_id": user, "query": "invoice", "limit": 10})
        assert [item["id"] for item in found.structured_content["items"]] == ["m1"]

        bad = await memory.call_tool("store_input", {"user_id": "nope", "input_data": {"content": "x"}})
        assert bad.is_error and bad.structured_content["error"]["code"] == "invalid_input"
        assert "user_id: Input should be a valid UUID" in bad.content[0].text

        deleted = await memory.call_tool("delete_memory", {"user_id": user, "item_id": "m1"})
        assert deleted.structured_content == {"deleted": 1}


async def test_cognition_reads_memory_over_mcp(services):
    user = str(uuid.uuid4())
    async with http_client(services.memory_url) as memory:
        await memory.call_tool(
            "store_input",
            {
                "user_id": user,
                "input_data": {
                    "id": "old",
                    "content": "passport renewal deadline",
                    "timestamp": "2025-01-01T00:00:00Z",
                },
            },
        )
        for n in range(5):
            await memory.call_tool("store_input", {"user_id": user, "input_data": {"content": f"small talk {n}"}})
    async with http_client(services.cognition_url, token=COGNITION_TOKEN) as cognition:
        searched = (await cognition.call_tool("get_context", {"user_id": user, "query": "passport"})).structured_content
        newest = (await cognition.call_tool("get_context", {"user_id": user, "limit": 2})).structured_content
    assert [item["id"] for item in searched["context"]] == ["old"] and searched["count"] == 1
    assert [item["content"] for item in newest["context"]] == ["small talk 4", "small talk 3"]


def post(url: str, *, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(
        url, json=INITIALIZE, headers={"Accept": "application/json, text/event-stream", **headers}, timeout=10
    )


@pytest.mark.parametrize("service", ["memory_url", "cognition_url"])
def test_requests_without_the_right_token_or_from_a_foreign_host_or_origin_are_refused(services, service):
    url = getattr(services, service)
    bearer = {"Authorization": f"Bearer {TOKEN if service == 'memory_url' else COGNITION_TOKEN}"}
    assert post(url, headers={}).status_code == 401
    assert post(url, headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    assert post(url, headers={"Authorization": TOKEN}).status_code == 401
    assert post(url, headers={**bearer, "Host": "evil.example:80"}).status_code == 421
    assert post(url, headers={**bearer, "Origin": "http://evil.example"}).status_code == 403
    assert post(url, headers=bearer).status_code == 200


async def test_an_mcp_client_with_a_wrong_token_gets_a_401_and_stores_nothing(services):
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    user = str(uuid.uuid4())
    headers = {"Authorization": "Bearer wrong-token-of-some-length"}
    # The SDK reports an HTTP error as a bare MCPError (in task groups) that does not carry the
    # status: the status is read off the wire instead.
    with pytest.raises(BaseExceptionGroup) as caught:
        async with httpx2.AsyncClient(headers=headers, timeout=10, event_hooks={"response": [record]}) as http:
            async with Client(streamable_http_client(services.memory_url, http_client=http), cache=None) as memory:
                await memory.call_tool("store_input", {"user_id": user, "input_data": {"content": "x"}})
    assert caught.group_contains(MCPError, depth=2)
    assert statuses and set(statuses) == {401}, statuses
    async with http_client(services.memory_url) as memory:
        history = json.loads((await memory.read_resource(f"history/{user}")).contents[0].text)
    assert history == []


async def test_sse_transport_serves_the_guides_clients(services):
    with running(memory_service(services.env, "--transport", "sse")) as server:
        user = str(uuid.uuid4())
        transport = sse_client(f"{server.url}/sse", headers={"Authorization": f"Bearer {TOKEN}"})
        async with Client(transport, mode="legacy", cache=None) as memory:
            stored = await memory.call_tool("store_input", {"user_id": user, "input_data": {"content": "via sse"}})
            assert stored.structured_content["status"] == "stored"
            history = json.loads((await memory.read_resource(f"history/{user}")).contents[0].text)
        assert [item["content"] for item in history] == ["via sse"]
        assert httpx2.get(f"{server.url}/sse", timeout=5).status_code == 401


def test_a_service_refuses_a_public_address_without_a_token():
    result = subprocess.run(
        [sys.executable, "manage.py", "run_memory_service", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        env=server_env(CORTEX_SERVICE_TOKEN=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "without CORTEX_SERVICE_TOKEN" in result.stderr


def test_sigterm_stops_a_service_cleanly(services):
    server = memory_service(services.env).start()
    assert server.stop() == 0


async def test_stdio_transport_keeps_stdout_for_the_protocol(services):
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["manage.py", "run_memory_service", "--transport", "stdio"],
        env=services.env,
        cwd=str(ROOT),
    )
    user = str(uuid.uuid4())
    async with Client(params, mode="legacy", cache=None) as memory:
        stored = await memory.call_tool("store_input", {"user_id": user, "input_data": {"content": "over stdio"}})
        assert stored.structured_content["status"] == "stored"
        history = json.loads((await memory.read_resource(f"history/{user}")).contents[0].text)
    assert [item["content"] for item in history] == ["over stdio"]


async def test_the_real_services_publish_typed_tool_arguments(services):
    """`tools/list` from the running processes: the SDK validates these, so a caller sees the bounds."""
    async with http_client(services.memory_url) as memory:
        tools = {tool.name: tool.input_schema for tool in (await memory.list_tools()).tools}
    search = tools["search_memory"]["properties"]
    assert search["user_id"] == {"format": "uuid", "title": "User Id", "type": "string"}
    assert (search["limit"]["minimum"], search["limit"]["maximum"], search["limit"]["default"]) == (1, 1000, 10)
    assert search["query"]["maxLength"] == 1000
    assert tools["delete_memory"]["properties"]["user_id"]["format"] == "uuid"
    assert tools["store_inputs"]["properties"]["items"]["maxItems"] == 1000
    store = tools["store_input"]
    assert store["properties"]["user_id"]["format"] == "uuid" and store["required"] == ["user_id", "input_data"]
    memory_input = store["$defs"]["MemoryInput"]
    assert memory_input["properties"]["content"]["type"] == "string" and memory_input["additionalProperties"] is True

    async with http_client(services.cognition_url, token=COGNITION_TOKEN) as cognition:
        [get_context] = [tool for tool in (await cognition.list_tools()).tools if tool.name == "get_context"]
    context = get_context.input_schema["properties"]
    assert context["user_id"]["format"] == "uuid"
    assert (context["limit"]["minimum"], context["limit"]["maximum"]) == (1, 1000)
    assert {"format": "uuid", "type": "string"} in context["conversation_id"]["anyOf"]
