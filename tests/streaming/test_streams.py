"""The SSE and WebSocket endpoints through the whole ASGI application: framing, auth, filtering,
resume, the replay/live seam, and cleanup."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from accounts.models import User
from conftest import client_for
from streaming import services
from streaming.models import Event
from tests.factories import ConversationFactory
from tests.streaming.conftest import SSEClient, WSClient, access_token, bearer, layer, post_input, settle

pytestmark = pytest.mark.django_db(transaction=True)


def issue_ticket(user) -> str:
    response = client_for(user).post("/output/ticket")
    assert response.status_code == 200, response.content
    return response.json()["ticket"]


async def test_sse_headers_retry_hint_and_event_framing(alice):
    sse = await SSEClient(headers=await bearer(alice)).open()
    assert sse.status == 200
    assert sse.headers[b"content-type"].startswith(b"text/event-stream")
    assert sse.headers[b"cache-control"] == b"no-cache"
    assert sse.headers[b"x-accel-buffering"] == b"no"
    assert await sse.frame() == "retry: 3000"
    await post_input(alice, "framed")
    frame = await sse.frame()
    id_line, data_line = frame.split("\n")
    assert id_line == "id: 1"
    assert json.loads(data_line.removeprefix("data: "))["data"]["content"] == "framed"
    assert "event:" not in frame
    await sse.close()


async def test_sse_sends_comment_heartbeats(alice, settings):
    settings.CORTEX = {**settings.CORTEX, "SSE_HEARTBEAT_SECONDS": 1}
    sse = await SSEClient(headers=await bearer(alice)).open()
    assert await sse.frame() == "retry: 3000"
    assert await sse.frame(timeout=10) == ": ping"
    assert await sse.frame(timeout=10) == ": ping"
    await sse.close()


async def test_conversation_filter_keeps_only_that_conversations_events(alice, bob, conversation):
    other = await database_sync_to_async(ConversationFactory)(workspace=conversation.workspace, topic="Other")
    filtered = await SSEClient(headers=await bearer(alice), conversation_id=str(conversation.id)).open()
    filtered_ws = await WSClient(headers=await bearer(alice), conversation_id=str(conversation.id)).open()
    await post_input(alice, "elsewhere", other)
    await post_input(alice, "no conversation")
    await post_input(bob, "here", conversation)
    event_id, event = await filtered.event()
    assert (event_id, event["data"]["content"]) == ("3", "here")
    assert (await filtered_ws.payload())["data"]["content"] == "here"
    await filtered.close()
    await filtered_ws.close()


@pytest.mark.parametrize("conversation_id", ["foreign", "00000000-0000-0000-0000-000000000000", "not-a-uuid"])
async def test_filter_on_a_conversation_one_does_not_take_part_in_is_404(charlie, conversation, conversation_id):
    value = str(conversation.id) if conversation_id == "foreign" else conversation_id
    sse = await SSEClient(headers=await bearer(charlie), conversation_id=value).open()
    assert sse.status == 404
    assert sse.headers[b"content-type"] == b"application/json"
    assert json.loads(await sse.body())["error"]["code"] == "not_found"
    ws = await WSClient(headers=await bearer(charlie), conversation_id=value).open()
    assert json.loads(await ws.communicator.receive_from())["error"]["code"] == "not_found"
    assert (await ws.communicator.receive_output())["code"] == 1008


async def _refused_sse(status: int, code: str, **kwargs) -> None:
    sse = await SSEClient(**kwargs).open()
    assert sse.status == status
    assert json.loads(await sse.body())["error"]["code"] == code


async def _refused_ws(code: str, **kwargs) -> None:
    ws = await WSClient(**kwargs).open()
    assert json.loads(await ws.communicator.receive_from())["error"]["code"] == code
    closed = await ws.communicator.receive_output()
    assert closed == {"type": "websocket.close", "code": 1008}


async def test_streams_refuse_missing_and_invalid_credentials(alice):
    await _refused_sse(401, "not_authenticated")
    await _refused_ws("not_authenticated")
    for header in (b"Bearer not-a-jwt", b"Basic YWxpY2U6cHc=", b"Bearer"):
        await _refused_sse(401, "invalid_token", headers=[(b"authorization", header)])
        await _refused_ws("invalid_token", headers=[(b"authorization", header)])


@pytest.mark.parametrize("param", ["token", "access_token"])
async def test_an_access_token_in_the_url_is_refused(alice, param):
    token = await sync_to_async(access_token)(alice)
    await _refused_sse(401, "token_in_url", **{param: token})
    await _refused_ws("token_in_url", **{param: token})


async def test_inactive_users_tokens_are_refused(alice):
    headers = await bearer(alice)
    await User.objects.filter(id=alice.id).aupdate(is_active=False)
    await _refused_sse(401, "invalid_token", headers=headers)
    await _refused_ws("invalid_token", headers=headers)


async def test_sse_refuses_other_methods(alice):
    sse = SSEClient(headers=await bearer(alice))
    sse.communicator.scope["method"] = "POST"
    await sse.open()
    assert sse.status == 405
    assert json.loads(await sse.body())["error"]["code"] == "method_not_allowed"


async def test_malformed_last_event_id_is_400(alice):
    await _refused_sse(400, "invalid_input", headers=[*await bearer(alice), (b"last-event-id", b"abc")])


@pytest.mark.parametrize(
    "origin, allowed",
    # The page's own origin only (test_websocket_origin.py: ports, schemes, WS_ALLOWED_ORIGINS).
    [("http://evil.example", False), ("http://localhost:3000", False), ("http://testserver", True)],
)
async def test_websocket_origin_is_checked(alice, origin, allowed):
    ws = WSClient(headers=await bearer(alice), origin=origin)
    connected, code = await ws.communicator.connect()
    assert connected is allowed
    if allowed:
        await ws.close()


@pytest.mark.parametrize("how", ["header", "query", "websocket"])
async def test_resume_replays_missed_events_then_goes_live_without_duplicates(alice, bob, conversation, how):
    for n in range(3):
        await post_input(bob, f"before {n}", conversation)
    # alice saw event 1 only; 2 and 3 are missed, 4 and 5 arrive while she is away.
    await post_input(bob, "missed 4", conversation)
    await post_input(alice, "missed 5")
    if how == "header":
        stream = await SSEClient(headers=[*await bearer(alice), (b"last-event-id", b"1")]).open()
    elif how == "query":
        stream = await SSEClient(headers=await bearer(alice), last_event_id="1").open()
    else:
        stream = await WSClient(headers=await bearer(alice), last_event_id="1").open()

    replayed = [await stream.payload() for _ in range(4)]
    assert [e["id"] for e in replayed] == ["2", "3", "4", "5"]
    assert [e["data"]["content"] for e in replayed] == ["before 1", "before 2", "missed 4", "missed 5"]
    # A late live copy of an event already replayed is dropped at the seam.
    await layer().group_send(services.user_group(alice.id), {"type": "stream.event", "seq": 5, "event": replayed[-1]})
    await post_input(bob, "live 6", conversation)
    live = await stream.payload()
    assert (live["id"], live["data"]["content"]) == ("6", "live 6")
    await stream.close()


async def test_live_copy_lost_by_the_layer_is_recovered_from_the_log(alice):
    """channels_redis drops over capacity; a stream that sees a later seq fetches the missing ones."""
    sse = await SSEClient(headers=await bearer(alice)).open()
    await settle()
    group = services.user_group(alice.id)
    [channel] = list(layer().groups[group])
    await layer().group_discard(group, channel)  # the next publication misses this stream
    await post_input(alice, "lost in transit")
    await layer().group_add(group, channel)
    await post_input(alice, "arrives live")
    assert [(await sse.event())[1]["data"]["content"] for _ in range(2)] == ["lost in transit", "arrives live"]
    await sse.close()


async def test_resume_from_beyond_retention_starts_with_reset(alice, settings):
    for n in range(3):
        await post_input(alice, f"old {n}")
    # Retention drops events 1 and 2; a client that last saw 1 has lost 2.
    await Event.objects.filter(recipient=alice, seq__lte=2).aupdate(created_at="2000-01-01T00:00:00Z")
    result = await database_sync_to_async(services.events_prune)()
    assert result["events"] == 2
    for stream_class in (SSEClient, WSClient):
        stream = await stream_class(headers=await bearer(alice), last_event_id="1").open()
        first = await stream.payload()
        assert first == {"id": "2", "type": "reset"}
        second = await stream.payload()
        assert (second["id"], second["data"]["content"]) == ("3", "old 2")
        await stream.close()
    # Ids within the window resume normally; an id this log never issued resets too.
    stream = await SSEClient(headers=await bearer(alice), last_event_id="2").open()
    assert (await stream.event())[1]["id"] == "3"
    await stream.close()
    stream = await SSEClient(headers=await bearer(alice), last_event_id="99").open()
    assert (await stream.event())[1]["type"] == "reset"
    await stream.close()


async def test_a_ticket_opens_its_users_stream_once(alice, bob):
    ticket = await sync_to_async(issue_ticket)(alice)
    sse = await SSEClient(ticket=ticket).open()
    assert sse.status == 200
    await post_input(bob, "bob's own")
    await post_input(alice, "alice's")
    assert (await sse.event())[1]["data"]["content"] == "alice's"  # never bob's event
    await sse.close()
    await _refused_sse(401, "invalid_token", ticket=ticket)
    await _refused_ws("invalid_token", ticket=ticket)


async def test_disconnects_leave_no_group_membership_or_tasks(alice):
    headers = await bearer(alice)
    await settle()
    tasks_before = len(asyncio.all_tasks())
    for _ in range(250):
        sse = await SSEClient(headers=headers).open()
        await sse.frame()
        await sse.close()
        ws = await WSClient(headers=headers).open()
        await ws.close()
    await settle()
    assert not any(layer().groups.values())
    assert len(layer().channels) <= 1
    assert len(asyncio.all_tasks()) <= tasks_before
