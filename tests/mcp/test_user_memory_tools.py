"""The memory tools behind `/memory`: list (keyset pages), get, add, correct and delete, through an
in-process MCP client on the real database. The server runs in this process, so its vector cache
is this process's: a search after a correction or a delete goes through the held matrix."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mcp_services.memory import vectors

pytestmark = pytest.mark.django_db(transaction=True)


async def call(memory, tool: str, **arguments) -> dict:
    result = await memory.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def refused(memory, tool: str, **arguments) -> str:
    result = await memory.call_tool(tool, arguments)
    assert result.is_error
    return result.structured_content["error"]["code"]


def at(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def test_list_pages_newest_first_by_keyset_and_new_items_do_not_shift_pages(memory):
    user = str(uuid.uuid4())
    items = [
        {"user_id": user, "input_data": {"id": f"i{n}", "content": f"note {n}", "timestamp": at(100 - n)}}
        for n in range(7)
    ]
    # Two items at the same moment: the row id orders them.
    items.append(
        {
            "user_id": user,
            "input_data": {"id": "twin", "content": "twin", "timestamp": items[3]["input_data"]["timestamp"]},
        }
    )
    await call(memory, "store_inputs", items=items)
    first = await call(memory, "list_memory", user_id=user, limit=3)
    assert [item["id"] for item in first["items"]] == ["i6", "i5", "i4"]
    await call(memory, "store_input", user_id=user, input_data={"id": "newest", "content": "new"})
    second = await call(memory, "list_memory", user_id=user, limit=3, cursor=first["next_cursor"])
    third = await call(memory, "list_memory", user_id=user, limit=3, cursor=second["next_cursor"])
    assert [item["id"] for item in second["items"]] == ["twin", "i3", "i2"]
    assert [item["id"] for item in third["items"]] == ["i1", "i0"] and third["next_cursor"] is None
    assert await refused(memory, "list_memory", user_id=user, cursor="not-a-cursor") == "invalid_input"


async def test_another_users_item_is_not_found_for_get_correct_and_delete(memory):
    alice, charlie = str(uuid.uuid4()), str(uuid.uuid4())
    await call(memory, "store_input", user_id=alice, input_data={"id": "secret", "content": "alice's note"})
    assert await refused(memory, "get_memory", user_id=charlie, item_id="secret") == "not_found"
    assert await refused(memory, "correct_memory", user_id=charlie, item_id="secret", content="x") == "not_found"
    assert (await call(memory, "delete_memory", user_id=charlie, item_id="secret"))["deleted"] == 0
    assert (await call(memory, "get_memory", user_id=alice, item_id="secret"))["item"]["content"] == "alice's note"


async def test_add_stores_an_item_of_the_users_own_found_by_meaning(memory):
    user = str(uuid.uuid4())
    added = (
        await call(
            memory, "add_memory", user_id=user, content="My daughter is allergic to peanuts", metadata={"tag": "health"}
        )
    )["item"]
    assert added["source"] == "user" and added["metadata"] == {"tag": "health"} and added["id"]
    found = await call(memory, "search_memory", user_id=user, query="which nuts can my child not eat", mode="semantic")
    assert [item["id"] for item in found["items"]] == [added["id"]]
    assert await refused(memory, "add_memory", user_id=user, content="   ") == "invalid_input"


async def test_a_corrected_item_is_found_by_its_new_meaning_and_not_its_old_one_through_the_held_matrix(memory):
    user = str(uuid.uuid4())
    await call(
        memory,
        "store_inputs",
        items=[
            {"user_id": user, "input_data": {"id": "fact", "content": "The dentist appointment is on Monday"}},
            *(
                {"user_id": user, "input_data": {"id": f"n{n}", "content": f"Groceries list number {n}: eggs and rice"}}
                for n in range(5)
            ),
        ],
    )
    before = await call(memory, "search_memory", user_id=user, query="dentist appointment", limit=1)
    assert before["items"][0]["id"] == "fact"
    assert uuid.UUID(user).hex in vectors.cache()  # the matrix is held: the correction must update it
    corrected = await call(
        memory, "correct_memory", user_id=user, item_id="fact", content="Piano lessons start in September"
    )
    assert corrected["item"]["content"] == "Piano lessons start in September"
    new = await call(
        memory, "search_memory", user_id=user, query="music classes for the autumn", limit=1, mode="semantic"
    )
    assert new["items"][0]["id"] == "fact" and new["parts"][0]["similarity"] > 0.2
    old = await call(memory, "search_memory", user_id=user, query="dentist appointment", limit=10)
    assert "fact" not in [item["id"] for item in old["items"]]
    assert (await call(memory, "get_memory", user_id=user, item_id="fact"))["item"]["content"].startswith("Piano")


async def test_a_deleted_item_is_gone_from_search_and_history_at_once_through_the_held_matrix(memory):
    user = str(uuid.uuid4())
    await call(
        memory, "store_input", user_id=user, input_data={"id": "gone", "content": "Spare key under the flower pot"}
    )
    await call(memory, "store_input", user_id=user, input_data={"id": "kept", "content": "Bins go out on Tuesday"})
    assert (await call(memory, "search_memory", user_id=user, query="where is the spare key", limit=1))["items"][0][
        "id"
    ] == "gone"
    assert (await call(memory, "delete_memory", user_id=user, item_id="gone"))["deleted"] == 1
    for mode in ("hybrid", "semantic", "keyword"):
        found = await call(memory, "search_memory", user_id=user, query="where is the spare key", mode=mode)
        assert "gone" not in [item["id"] for item in found["items"]], mode
    listed = await call(memory, "list_memory", user_id=user)
    assert [item["id"] for item in listed["items"]] == ["kept"]
