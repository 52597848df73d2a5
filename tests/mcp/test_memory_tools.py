"""The memory service's tools and resources through an in-process MCP client, on the real database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from mcp import MCPError

from common.db import db_call
from mcp_services.models import MemoryItem

pytestmark = pytest.mark.django_db(transaction=True)


def at(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def store(memory, user_id: str, **input_data) -> dict:
    result = await memory.call_tool("store_input", {"user_id": user_id, "input_data": input_data})
    assert not result.is_error, result.content
    return result.structured_content


async def read(memory, uri: str) -> list[dict]:
    result = await memory.read_resource(uri)
    return json.loads(result.contents[0].text)


item_count = db_call(lambda: MemoryItem.objects.count())


async def test_store_input_returns_the_guides_status_and_fills_id_and_timestamp(memory):
    user = str(uuid.uuid4())
    answer = await store(memory, user, content="hello")
    assert answer["status"] == "stored" and answer["user_id"] == user
    [item] = await read(memory, f"history/{user}")
    assert item["id"] == answer["item_id"] and item["content"] == "hello"
    datetime.fromisoformat(item["timestamp"])


async def test_store_input_is_idempotent_on_the_input_id(memory):
    user = str(uuid.uuid4())
    first = await store(memory, user, id="m-1", content="once")
    retry = await store(memory, user, id="m-1", content="once")
    assert retry == first and first["item_id"] == "m-1"
    assert await item_count() == 1


async def test_store_inputs_stores_a_batch_idempotently_and_refuses_bad_items_alone(memory):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    items = [
        {"user_id": alice, "input_data": {"id": "a-1", "content": "first"}},
        {"user_id": bob, "input_data": {"id": "a-1", "content": "same id, other user"}},
        {"user_id": alice, "input_data": {"id": "a-2", "content": 5}},
        {"user_id": "not-a-uuid", "input_data": {"content": "x"}},
        {"user_id": alice, "input_data": {"id": "a-1", "content": "first"}},
    ]
    result = await memory.call_tool("store_inputs", {"items": items})
    assert not result.is_error, result.content
    answer = result.structured_content
    assert [r["status"] for r in answer["results"]] == ["stored", "stored", "invalid", "invalid", "stored"]
    assert answer["results"][2]["code"] == "invalid_input"  # the code as data, not in the text
    assert answer["results"][2]["error"].startswith("input_data.content")
    assert await item_count() == 2
    retry = (await memory.call_tool("store_inputs", {"items": items[:2]})).structured_content
    assert [r["status"] for r in retry["results"]] == ["duplicate", "duplicate"] and retry["stored"] == 0
    assert await item_count() == 2
    assert [item["content"] for item in await read(memory, f"history/{bob}")] == ["same id, other user"]


async def test_store_inputs_refuses_an_oversized_batch(memory):
    items = [{"user_id": str(uuid.uuid4()), "input_data": {"content": "x"}}] * 1001
    result = await memory.call_tool("store_inputs", {"items": items})
    assert result.is_error and "at most 1000" in result.content[0].text
    assert await item_count() == 0


async def test_history_is_oldest_first_and_limited_history_newest_first(memory):
    user = str(uuid.uuid4())
    for n, minutes_ago in enumerate([30, 20, 10]):
        await store(memory, user, id=f"i{n}", content=f"item {n}", timestamp=at(minutes_ago))
    assert [item["id"] for item in await read(memory, f"history/{user}")] == ["i0", "i1", "i2"]
    assert [item["id"] for item in await read(memory, f"history/{user}/limit/2")] == ["i2", "i1"]


async def test_history_holds_only_the_users_own_items(memory):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await store(memory, alice, content="alice's secret")
    assert await read(memory, f"history/{bob}") == []


async def test_search_ranks_an_older_relevant_item_above_newer_ones(memory):
    user = str(uuid.uuid4())
    await store(memory, user, id="old", content="Quarterly budget review for the marketing team", timestamp=at(600))
    await store(memory, user, id="mid", content="The team lunch is on Friday", timestamp=at(60))
    for n in range(5):
        await store(memory, user, id=f"new{n}", content=f"Unrelated note number {n}", timestamp=at(n))
    result = await memory.call_tool(
        "search_memory", {"user_id": user, "query": "budget reviews", "limit": 5, "mode": "keyword"}
    )
    found = result.structured_content
    assert [item["id"] for item in found["items"]] == ["old"]
    assert found["scores"] == [1.0]
    assert found["parts"] == [
        {
            "keyword_rank": 1,
            "similarity": None,
            "recency": found["parts"][0]["recency"],
            "coverage": None,  # hybrid only
            "exact": False,
        }
    ]


async def test_search_orders_by_relevance_not_by_substring(memory):
    user = str(uuid.uuid4())
    await store(memory, user, id="both", content="deploy the database migration tonight", timestamp=at(100))
    await store(memory, user, id="one", content="the database is slow", timestamp=at(1))
    await store(memory, user, id="none", content="nothing relevant here at all", timestamp=at(0))
    result = await memory.call_tool("search_memory", {"user_id": user, "query": "database migration"})
    ids = [item["id"] for item in result.structured_content["items"]]
    assert ids == ["both", "one"]


async def test_search_matches_word_forms(memory):
    user = str(uuid.uuid4())
    await store(memory, user, id="m", content="We finished the migration")
    result = await memory.call_tool("search_memory", {"user_id": user, "query": "migrations"})
    assert [item["id"] for item in result.structured_content["items"]] == ["m"]


async def test_search_never_returns_another_users_items(memory):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await store(memory, alice, content="alice plans the offsite")
    result = await memory.call_tool("search_memory", {"user_id": bob, "query": "offsite"})
    assert result.structured_content["items"] == []


async def test_search_treats_query_syntax_as_plain_words(memory):
    user = str(uuid.uuid4())
    await store(memory, user, content="release notes")
    result = await memory.call_tool("search_memory", {"user_id": user, "query": '"release" OR NEAR( * -notes:'})
    assert not result.is_error
    assert [item["content"] for item in result.structured_content["items"]] == ["release notes"]


async def test_delete_memory_by_item_and_by_conversation(memory):
    user = str(uuid.uuid4())
    conversation = str(uuid.uuid4())
    await store(memory, user, id="a", content="a", conversation_id=conversation)
    await store(memory, user, id="b", content="b", conversation_id=conversation)
    await store(memory, user, id="c", content="c")
    deleted = await memory.call_tool("delete_memory", {"user_id": user, "item_id": "c"})
    assert deleted.structured_content == {"deleted": 1}
    deleted = await memory.call_tool("delete_memory", {"user_id": user, "conversation_id": conversation})
    assert deleted.structured_content == {"deleted": 2}
    assert await read(memory, f"history/{user}") == []
    searched = await memory.call_tool("search_memory", {"user_id": user, "query": "a b c"})
    assert searched.structured_content["items"] == []


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("store_input", {"input_data": {"content": "x"}}, "user_id"),
        ("store_input", {"user_id": "", "input_data": {"content": "x"}}, "user_id: Input should be a valid UUID"),
        (
            "store_input",
            {"user_id": "not-a-uuid", "input_data": {"content": "x"}},
            "user_id: Input should be a valid UUID",
        ),
        ("store_input", {"user_id": str(uuid.uuid4()), "input_data": ["x"]}, "valid dictionary"),
        ("store_input", {"user_id": str(uuid.uuid4()), "input_data": "x"}, "valid dictionary"),
        (
            "store_input",
            {"user_id": str(uuid.uuid4()), "input_data": {"content": 5}},
            "input_data.content: Input should be a valid string",
        ),
        ("store_input", {"user_id": str(uuid.uuid4()), "input_data": {"timestamp": "soon"}}, "ISO 8601"),
        (
            "search_memory",
            {"user_id": str(uuid.uuid4()), "query": "x", "limit": -1},
            "limit: Input should be greater than or equal to 1",
        ),
        (
            "search_memory",
            {"user_id": str(uuid.uuid4()), "query": "x", "limit": 10**9},
            "limit: Input should be less than or equal to 1000",
        ),
        ("search_memory", {"user_id": "nope", "query": "x"}, "user_id: Input should be a valid UUID"),
        ("delete_memory", {"user_id": str(uuid.uuid4())}, "give item_id or conversation_id"),
    ],
)
async def test_bad_arguments_are_a_clear_tool_error_and_store_nothing(memory, tool, arguments, message):
    result = await memory.call_tool(tool, arguments)
    assert result.is_error
    assert message in result.content[0].text
    assert await item_count() == 0


@pytest.mark.parametrize("limit", ["-1", "0", "100000"])
async def test_history_with_a_bad_limit_is_an_error(memory, limit):
    with pytest.raises(MCPError, match=r"limit: Input should be (greater|less) than or equal to"):
        await memory.read_resource(f"history/{uuid.uuid4()}/limit/{limit}")


async def test_oversized_input_is_refused(memory, settings):
    settings.CORTEX = {**settings.CORTEX, "MEMORY_MAX_ITEM_BYTES": 1024}
    result = await memory.call_tool(
        "store_input", {"user_id": str(uuid.uuid4()), "input_data": {"content": "x" * 2000}}
    )
    assert result.is_error and "at most 1024 bytes" in result.content[0].text
    assert await item_count() == 0


async def test_tools_return_structured_content(memory):
    tools = {tool.name: tool for tool in (await memory.list_tools()).tools}
    assert set(tools) >= {"store_input", "search_memory", "delete_memory"}
    assert all(tools[name].output_schema for name in ("store_input", "search_memory", "delete_memory"))


async def test_a_refusal_carries_its_code_as_data_not_text(memory, memory_server):
    from common.errors import ErrorCode
    from mcp_services.client import ServiceClient, ServiceToolError

    result = await memory.call_tool("store_input", {"user_id": "not-a-uuid", "input_data": {"content": "x"}})
    assert result.is_error
    error = result.structured_content["error"]
    assert error["code"] == "invalid_input" and error["message"].startswith("user_id: Input should be a valid UUID")
    assert list(error["fields"]) == ["user_id"]

    client = ServiceClient(name="memory", target=memory_server, token=None, timeout=10)
    try:
        with pytest.raises(ServiceToolError) as refused:
            await client.call_tool("delete_memory", {"user_id": str(uuid.uuid4())})
        # An argument of the wrong type (the SDK's validation) is as clear and as final a refusal.
        with pytest.raises(ServiceToolError) as mistyped:
            await client.call_tool("search_memory", {"user_id": "nope", "query": "x", "limit": 0})
    finally:
        await client.aclose()
    assert refused.value.code is ErrorCode.INVALID_INPUT and refused.value.permanent
    assert refused.value.message == "give item_id or conversation_id (or both), or everything=true."
    assert mistyped.value.code is ErrorCode.INVALID_INPUT and mistyped.value.permanent
    assert set(mistyped.value.fields or {}) == {"user_id", "limit"}
