"""`POST /internal/events`: events committed by another process (the turn worker, without Redis)
reach this process's streams; only a loopback peer with the relay token may relay (not the service
token every process holds), and only well-formed live copies."""

from __future__ import annotations

import json
import os

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from streaming import services
from tests.streaming.conftest import SSEClient, bearer

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = os.environ["CORTEX_RELAY_TOKEN"]
SERVICE_TOKEN = os.environ["CORTEX_SERVICE_TOKEN"]


def committed_event(user, text: str = "from the worker") -> list:
    """An event appended to `user`'s log the way the worker does: committed, not published."""
    with transaction.atomic():
        live = services.events_append(
            events=[
                services.NewEvent(
                    type="assistant.delta",
                    user_id=user.id,
                    conversation_id=None,
                    data={"turn_id": "t", "text": text},
                    recipient_ids=[user.id],
                    created_at=timezone.now(),
                )
            ]
        )
    return [[group, message] for group, message in live]


def relay(body: object, token: str | None = TOKEN, peer: str = "127.0.0.1"):
    client = APIClient(REMOTE_ADDR=peer)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/internal/events", json.dumps(body), content_type="application/json")


async def test_relayed_events_reach_the_recipients_streams(alice):
    sse = await SSEClient(headers=await bearer(alice)).open()
    assert await sse.frame() == "retry: 3000"
    events = await database_sync_to_async(committed_event)(alice)
    response = await database_sync_to_async(relay)({"events": events})
    assert response.status_code == 204
    event_id, event = await sse.event()
    assert (event_id, event["type"], event["data"]["text"]) == ("1", "assistant.delta", "from the worker")
    await sse.close()


def test_only_a_loopback_peer_with_the_relay_token_relays_and_only_live_copies(alice):
    events = committed_event(alice)
    assert relay({"events": events}, token=None).status_code == 404
    assert relay({"events": events}, token="not-the-token").status_code == 404
    # The memory, cognition, outbox and housekeeping processes hold the service token: not enough.
    assert relay({"events": events}, token=SERVICE_TOKEN).status_code == 404
    for peer in ("10.0.0.7", "192.168.1.20", "2001:db8::1", "unknown"):
        assert relay({"events": events}, peer=peer).status_code == 404, peer
    assert relay({"events": events}, peer="::1").status_code == 204
    group, message = events[0]
    forged = [
        [group, {**message, "type": "stream.revoke"}],
        [group, {**message, "json": '{"id":"99","type":"x"}'}],
        ["some.other.group", message],
        [group, {**message, "extra": 1}],
    ]
    for bad in forged:
        response = relay({"events": [bad]})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input", bad
    assert relay({"events": events}).status_code == 204


async def test_a_relayed_event_may_be_larger_than_a_clients_request_body(alice, settings):
    sse = await SSEClient(headers=await bearer(alice)).open()
    assert await sse.frame() == "retry: 3000"
    long_answer = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1000)
    events = await database_sync_to_async(committed_event)(alice, long_answer)
    assert (await database_sync_to_async(relay)({"events": events})).status_code == 204
    _, event = await sse.event()
    assert event["data"]["text"] == long_answer
    await sse.close()
