"""The event log, tickets and retention against the real database; bad input publishes nothing."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from conftest import client_for
from streaming import selectors, services
from streaming.models import Event, EventBody, EventCursor, StreamTicket
from tests.factories import ConversationFactory
from tests.streaming.conftest import SSEClient, WSClient, bearer, post_input
from workspaces.models import IdempotencyRecord, Message
from workspaces.services import message_create


def seqs(user) -> list[int]:
    return list(Event.objects.filter(recipient=user).order_by("seq").values_list("seq", flat=True))


@pytest.mark.django_db
def test_each_recipient_gets_a_gap_free_sequence_of_its_own(alice, bob, charlie, conversation):
    message_create(sender=alice, content="one", conversation=conversation)
    message_create(sender=bob, content="two")
    message_create(sender=bob, content="three", conversation=conversation)
    assert seqs(alice) == [1, 2]
    assert seqs(bob) == [1, 2, 3]
    assert seqs(charlie) == []
    page = selectors.event_page(user_id=bob.id, after=1, through=3)
    assert [(seq, json.loads(event)["data"]["content"]) for seq, event in page] == [(2, "two"), (3, "three")]
    assert all(json.loads(event)["id"] == str(seq) for seq, event in page)
    first = json.loads(page[0][1])
    assert first["user_id"] == str(bob.id) and first["conversation_id"] is None
    assert selectors.log_position(user_id=bob.id) == (3, 0)
    assert selectors.log_position(user_id=charlie.id) == (0, 0)


@pytest.mark.django_db
def test_a_rolled_back_input_leaves_no_event_and_no_used_seq(alice):
    with pytest.raises(RuntimeError), transaction.atomic():
        message_create(sender=alice, content="doomed")
        raise RuntimeError
    message_create(sender=alice, content="kept")
    assert seqs(alice) == [1]
    assert Event.objects.get(recipient=alice).body.payload["data"]["content"] == "kept"


@pytest.mark.django_db
def test_deleting_a_conversation_deletes_its_events(alice, conversation):
    message_create(sender=alice, content="in it", conversation=conversation)
    message_create(sender=alice, content="outside")
    response = client_for(alice).delete(f"/config/conversation/{conversation.id}")
    assert response.status_code == 204
    assert [e.body.payload["data"]["content"] for e in Event.objects.filter(recipient=alice)] == ["outside"]


@pytest.mark.django_db
def test_prune_events_drops_old_events_records_and_tickets(alice, bob):
    old = timezone.now() - timedelta(hours=25)
    with time_machine.travel(old, tick=False):
        message_create(sender=alice, content="old", idempotency_key="k-old")
        services.ticket_issue(user=alice)
    message_create(sender=alice, content="new", idempotency_key="k-new")
    message_create(sender=bob, content="bob's")
    services.ticket_issue(user=bob)
    call_command("prune_events", stdout=open("/dev/null", "w"))
    assert seqs(alice) == [2]
    assert EventCursor.objects.get(user=alice).pruned_through == 1
    assert EventCursor.objects.get(user=bob).pruned_through == 0
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k-new"]
    assert list(StreamTicket.objects.values_list("user", flat=True)) == [bob.id]
    # The old event's body went with its last delivery; the others' bodies stay.
    assert sorted(EventBody.objects.values_list("payload__data__content", flat=True)) == ["bob's", "new"]


def test_an_event_body_is_stored_once_for_all_recipients(alice, bob, conversation):
    message_create(sender=alice, content="x" * 10_000, conversation=conversation)
    assert EventBody.objects.count() == 1
    assert Event.objects.filter(body=EventBody.objects.get()).count() == 2


@pytest.mark.django_db
def test_tickets_are_single_use_short_lived_and_stored_hashed(alice):
    response = client_for(alice).post("/output/ticket")
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 30
    assert not StreamTicket.objects.filter(ticket_hash=body["ticket"]).exists()
    assert services.ticket_consume(ticket=body["ticket"]).user == alice
    assert services.ticket_consume(ticket=body["ticket"]) is None

    with time_machine.travel(timezone.now(), tick=False) as traveller:
        ticket = services.ticket_issue(user=alice)["ticket"]
        traveller.shift(timedelta(seconds=31))
        assert services.ticket_consume(ticket=ticket) is None
    assert services.ticket_consume(ticket="") is None
    assert services.ticket_consume(ticket="x" * 500) is None


@pytest.mark.django_db
def test_ticket_endpoint_requires_a_token(api):
    response = api.post("/output/ticket")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db(transaction=True)
async def test_an_expired_ticket_does_not_open_a_stream(alice):
    with time_machine.travel(timezone.now(), tick=True) as traveller:
        ticket = (await sync_to_async(services.ticket_issue)(user=alice))["ticket"]
        traveller.shift(timedelta(seconds=31))
        sse = await SSEClient(ticket=ticket).open()
        assert sse.status == 401
        assert json.loads(await sse.body())["error"]["code"] == "invalid_token"


BIG = "x" * 32_769


def _bad_inputs(conversation, other_users_conversation):
    return [
        ({"content": ""}, "json", 400),
        ({"content": BIG}, "json", 413),
        ({"content": "hi", "conversation_id": str(other_users_conversation.id)}, "json", 404),
        ({"content": "hi", "conversation_id": str(uuid.uuid4())}, "json", 404),
        ({"content": "hi", "conversation_id": "not-a-uuid"}, "json", 400),
        ({"content": "hi", "metadata": ["not", "an", "object"]}, "json", 400),
        ({"content": "hi", "metadata": "text"}, "json", 400),
        ("content=hi", "form", 415),
        ("{not json", "raw", 400),
    ]


@pytest.mark.django_db(transaction=True)
async def test_bad_input_is_refused_stores_nothing_and_publishes_nothing(alice, bob, charlie, conversation):
    foreign = await sync_to_async(ConversationFactory)(workspace__owner=charlie, topic="Charlie's")
    sse = await SSEClient(headers=await bearer(alice)).open()
    ws = await WSClient(headers=await bearer(alice)).open()

    def post_all():
        client = client_for(alice)
        statuses = []
        for body, kind, expected in _bad_inputs(conversation, foreign):
            if kind == "json":
                response = client.post("/input", body, format="json")
            elif kind == "form":
                response = client.post("/input", body, content_type="application/x-www-form-urlencoded")
            else:
                response = client.post("/input", body, content_type="application/json")
            assert response.status_code == expected, (
                body if kind != "json" else body.get("content", "")[:20],
                response.content,
            )
            assert set(response.json()) == {"error"}
            statuses.append(response.status_code)
        return statuses

    assert len(await sync_to_async(post_all)()) == 9
    assert await Message.objects.acount() == 0
    assert await Event.objects.acount() == 0
    # The first thing either stream ever receives is the first valid input, with id 1.
    await post_input(alice, "valid", conversation)
    event_id, event = await sse.event()
    assert (event_id, event["data"]["content"]) == ("1", "valid")
    assert (await ws.payload())["id"] == "1"
    await sse.close()
    await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_idempotent_retries_create_one_message_and_one_event(alice, bob, conversation):
    sse = await SSEClient(headers=await bearer(bob)).open()
    first = await post_input(alice, "once", conversation, idempotency_key="retry-me")
    again = await post_input(alice, "once", conversation, idempotency_key="retry-me")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    conflict = await post_input(alice, "different", conversation, idempotency_key="retry-me")
    assert conflict.status_code == 409
    await post_input(alice, "next", conversation)
    assert await Message.objects.acount() == 2
    assert await Event.objects.filter(recipient=bob).acount() == 2
    assert [(await sse.event())[1]["data"]["content"] for _ in range(2)] == ["once", "next"]
    await sse.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_make_each_log_visible_as_a_gap_free_prefix(alice, bob, conversation):
    """Seqs become visible in order: a reader never sees seq N while some seq < N is missing.

    On PostgreSQL the writers really overlap; the per-user cursor row lock is what keeps this true
    (without it they collide on the same seq, or an earlier seq commits after a later one).
    """
    import threading

    from django.db import connection

    writers, each = 6, 15
    errors: list[BaseException] = []
    done = threading.Event()
    observations = 0

    def write(n: int) -> None:
        try:
            for i in range(each):
                sender = alice if (n + i) % 2 else bob
                message_create(sender=sender, content=f"{n}-{i}", conversation=conversation)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def read() -> None:
        nonlocal observations
        try:
            while not done.is_set():
                visible = list(Event.objects.filter(recipient=alice).order_by("seq").values_list("seq", flat=True))
                assert visible == list(range(1, len(visible) + 1)), visible
                observations += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    reader = threading.Thread(target=read)
    reader.start()
    pool = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    done.set()
    reader.join()
    assert not errors, errors
    assert observations > 0
    total = writers * each
    assert seqs(alice) == seqs(bob) == list(range(1, total + 1))
    # Both logs list the inputs in the same (commit) order.
    order = lambda user: list(  # noqa: E731
        Event.objects.filter(recipient=user).order_by("seq").values_list("body__message_id", flat=True)
    )
    assert order(alice) == order(bob)
