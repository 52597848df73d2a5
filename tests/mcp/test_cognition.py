"""The cognition service in-process, reading an in-process memory service through ServiceClient."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from mcp import Client

from mcp_services.client import ServiceClient
from mcp_services.cognition.server import build_cognition_server
from tests.mcp.conftest import held
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def at(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


@pytest.fixture
async def memory_client(memory_server):
    client = ServiceClient(name="memory", target=memory_server, token=None, timeout=10)
    yield client
    await client.aclose()


@pytest.fixture
async def cognition(memory_client):
    async with held(Client(build_cognition_server(memory=memory_client), cache=None)) as client:
        yield client


async def context(cognition, **arguments) -> dict:
    result = await cognition.call_tool("get_context", arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def test_without_a_query_the_newest_items_come_first(memory_client, cognition):
    user = str(uuid.uuid4())
    for n in range(5):
        await memory_client.call_tool(
            "store_input", {"user_id": user, "input_data": {"id": f"i{n}", "content": f"n{n}", "timestamp": at(10 - n)}}
        )
    answer = await context(cognition, user_id=user, limit=3)
    assert [item["id"] for item in answer["context"]] == ["i4", "i3", "i2"]
    assert answer["count"] == 3 and answer["user_id"] == user and answer["query"] is None


async def test_with_a_query_an_older_relevant_item_comes_first(memory_client, cognition):
    user = str(uuid.uuid4())
    await memory_client.call_tool(
        "store_input",
        {
            "user_id": user,
            "input_data": {"id": "old", "content": "the kubernetes cluster upgrade plan", "timestamp": at(9000)},
        },
    )
    await memory_client.call_tool(
        "store_input",
        {"user_id": user, "input_data": {"id": "weak", "content": "cluster of grapes", "timestamp": at(5)}},
    )
    for n in range(10):
        await memory_client.call_tool(
            "store_input",
            {"user_id": user, "input_data": {"id": f"new{n}", "content": f"chat {n}", "timestamp": at(n)}},
        )
    answer = await context(cognition, user_id=user, query="kubernetes cluster upgrade", limit=5)
    # The two word matches first, the strongest although oldest; then the nearest by meaning alone.
    assert [item["id"] for item in answer["context"]][:2] == ["old", "weak"]
    assert answer["query"] == "kubernetes cluster upgrade" and answer["count"] == len(answer["context"]) <= 5


async def test_with_a_query_a_paraphrase_sharing_no_word_is_found(memory_client, cognition):
    user = str(uuid.uuid4())
    notes = {
        "budget": "The quarterly budget for the penguin enclosure is approved.",
        "tyres": "Winter tyres are stored in the basement of my brother's building.",
        "standup": "Standup moves to 9:45 because the design team needs the room at 9:30.",
    }
    items = [{"user_id": user, "input_data": {"id": key, "content": text}} for key, text in notes.items()]
    await memory_client.call_tool("store_inputs", {"items": items})
    answer = await context(cognition, user_id=user, query="money granted to bird habitat", limit=1)
    assert [item["id"] for item in answer["context"]] == ["budget"]


async def test_conversation_filter_keeps_only_that_conversations_items(memory_client, cognition):
    user, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    await memory_client.call_tool(
        "store_input",
        {"user_id": user, "input_data": {"id": "in", "content": "roadmap", "conversation_id": conversation}},
    )
    await memory_client.call_tool("store_input", {"user_id": user, "input_data": {"id": "out", "content": "roadmap"}})
    plain = await context(cognition, user_id=user, conversation_id=conversation)
    searched = await context(cognition, user_id=user, conversation_id=conversation, query="roadmap")
    assert [item["id"] for item in plain["context"]] == ["in"]
    assert [item["id"] for item in searched["context"]] == ["in"]


async def test_memory_down_gives_an_empty_context_with_an_error():
    unreachable = ServiceClient(name="memory", target=f"http://127.0.0.1:{free_port()}/mcp", token="x" * 20, timeout=2)
    async with held(Client(build_cognition_server(memory=unreachable), cache=None)) as cognition:
        answer = await context(cognition, user_id=str(uuid.uuid4()), query="anything")
    assert answer["context"] == [] and answer["count"] == 0
    assert "memory service unreachable" in answer["error"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"user_id": "nope"}, "user_id: Input should be a valid UUID"),
        ({"user_id": str(uuid.uuid4()), "limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"user_id": str(uuid.uuid4()), "limit": 5000}, "limit: Input should be less than or equal to 1000"),
        ({"user_id": str(uuid.uuid4()), "conversation_id": "../x"}, "conversation_id: Input should be a valid UUID"),
    ],
)
async def test_bad_arguments_are_a_tool_error(cognition, arguments, message):
    result = await cognition.call_tool("get_context", arguments)
    assert result.is_error and message in result.content[0].text


async def test_with_participants_a_conversations_items_come_from_each_participants_memory_only(
    memory_client, cognition
):
    alice, bob, conversation, elsewhere = (str(uuid.uuid4()) for _ in range(4))
    items = [
        (alice, "a-here", "the zorblax rollout starts monday", conversation),
        (bob, "b-here", "zorblax needs the new certificate", conversation),
        (alice, "a-elsewhere", "my zorblax salary is private", elsewhere),
        (bob, "b-elsewhere", "zorblax notes from another workspace", elsewhere),
    ]
    for owner, item_id, content, conversation_id in items:
        await memory_client.call_tool(
            "store_input",
            {"user_id": owner, "input_data": {"id": item_id, "content": content, "conversation_id": conversation_id}},
        )
    scoped = {"user_id": alice, "conversation_id": conversation, "participant_ids": [alice, bob]}
    found = await context(cognition, query="zorblax", **scoped)
    assert {(item["id"], item["user_id"]) for item in found["context"]} == {("a-here", alice), ("b-here", bob)}
    newest = await context(cognition, **scoped)  # without a query: the newest of each, merged
    assert {item["id"] for item in newest["context"]} == {"a-here", "b-here"}
    alone = await context(cognition, query="zorblax", user_id=alice, conversation_id=conversation)
    assert [item["id"] for item in alone["context"]] == ["a-here"], "without participants: the user's own"
