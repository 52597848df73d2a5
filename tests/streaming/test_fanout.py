"""Who receives an input: the sender and every participant of its conversation, no one else."""

from __future__ import annotations

import pytest

from tests.streaming.conftest import SSEClient, WSClient, bearer, post_input

pytestmark = pytest.mark.django_db(transaction=True)


async def test_input_reaches_every_open_stream_of_sender_and_participants_only(alice, bob, charlie, conversation):
    streams = {}
    for user in (alice, bob, charlie):
        streams[user.email] = (
            await SSEClient(headers=await bearer(user)).open(),
            await SSEClient(headers=await bearer(user)).open(),
            await WSClient(headers=await bearer(user)).open(),
        )
    response = await post_input(alice, "hello team", conversation)
    assert response.status_code == 200, response.content
    data = response.json()["data"]

    for email in (alice.email, bob.email):
        sse_one, sse_two, ws = streams[email]
        for sse in (sse_one, sse_two):
            event_id, event = await sse.event()
            assert event_id == event["id"] == "1"
            assert event == {
                "id": "1",
                "type": "input",
                "user_id": str(alice.id),
                "conversation_id": str(conversation.id),
                "data": data,
                "metadata": {},
                "timestamp": data["timestamp"],
            }
        assert await ws.payload() == event

    # charlie's streams got nothing: the first event they ever see is charlie's own input.
    await post_input(charlie, "only mine")
    for stream in streams[charlie.email]:
        event = await stream.payload()
        assert event["data"]["content"] == "only mine"
        assert event["user_id"] == str(charlie.id)

    for group in streams.values():
        for stream in group:
            await stream.close()


async def test_input_without_conversation_reaches_only_its_sender(alice, bob, conversation):
    alice_sse = await SSEClient(headers=await bearer(alice)).open()
    bob_ws = await WSClient(headers=await bearer(bob)).open()
    await post_input(bob, "note to self")
    assert (await bob_ws.payload())["data"]["content"] == "note to self"
    await post_input(alice, "in the conversation", conversation)
    assert (await bob_ws.payload())["data"]["content"] == "in the conversation"
    # alice's first event is her conversation input: bob's private note never reached her.
    _, event = await alice_sse.event()
    assert event["data"]["content"] == "in the conversation"
    await alice_sse.close()
    await bob_ws.close()
