"""Writes of the streaming app: the event log, its live publication, tickets, retention.

`events_record_for_message` runs inside the transaction of `workspaces.services.message_create`
(through the `message_created` signal), so an input and its events commit or roll back together.
The channel-layer publication happens only after that commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts.models import User
from common.metrics import EVENTS_PUBLISHED
from streaming.models import Event, EventBody, EventCursor, StreamTicket
from workspaces.models import IdempotencyRecord, Message
from workspaces.selectors import iso
from workspaces.services import InputData

logger = logging.getLogger(__name__)

STREAM_EVENT = "stream.event"  # channel-layer message type, handled by the consumers


class EventPayload(TypedDict):
    id: str
    type: str
    user_id: str
    conversation_id: str | None
    data: InputData | dict[str, Any]
    metadata: dict[str, Any]
    timestamp: str


class LiveMessage(TypedDict):
    type: str  # STREAM_EVENT
    seq: int
    event: EventPayload


class TicketIssued(TypedDict):
    ticket: str
    expires_in: int


class PruneResult(TypedDict):
    events: int
    idempotency_records: int
    tickets: int


def user_group(user_id: uuid.UUID | str) -> str:
    """The channel-layer group of one user's streams (all their connections, on every process)."""
    return f"user.{uuid.UUID(str(user_id)).hex}"


def event_payload(event: Event) -> EventPayload:
    return {"id": str(event.seq), **event.body.payload}  # type: ignore[typeddict-item]


def cursor_ensure(*, user_id: uuid.UUID) -> None:
    """Give a new user their event cursor, in the transaction that creates the user."""
    EventCursor.objects.get_or_create(user_id=user_id)


def _seqs_allocate(recipient_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Next seq of each recipient, under a row lock held until the caller's transaction ends.

    Rows are locked in one order (by user id) so concurrent writers cannot deadlock. On SQLite
    FOR UPDATE is a no-op, but IMMEDIATE transactions already serialize all writers.
    """
    locked = EventCursor.objects.select_for_update().filter(user_id__in=recipient_ids).order_by("user_id")
    current = dict(locked.values_list("user_id", "last_seq"))
    if len(current) < len(recipient_ids):
        # Only for users made without signals (bulk_create): cursors are created with the user
        # (`cursor_ensure`), because inserting one here, while holding locks on others, could
        # deadlock against a writer doing the same in another order.
        EventCursor.objects.bulk_create(
            [EventCursor(user_id=uid) for uid in recipient_ids if uid not in current], ignore_conflicts=True
        )
        current = dict(locked.values_list("user_id", "last_seq"))
    EventCursor.objects.filter(user_id__in=recipient_ids).update(last_seq=F("last_seq") + 1)
    return {user_id: last_seq + 1 for user_id, last_seq in current.items()}


def events_record_for_message(
    *, message: Message, recipient_ids: Iterable[uuid.UUID], data: InputData
) -> list[Event]:
    """Append an "input" event to every recipient's log; publish them once the transaction commits."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("events_record_for_message must run inside the input's transaction")
    recipients = sorted(set(recipient_ids))
    seqs = _seqs_allocate(recipients)
    payload = {
        "type": "input",
        "user_id": str(message.sender_id),
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "data": dict(data),
        "metadata": message.metadata,
        "timestamp": iso(message.created_at),
    }
    body = EventBody.objects.create(type="input", message=message, payload=payload, created_at=message.created_at)
    events = Event.objects.bulk_create(
        [
            Event(
                recipient_id=uid,
                seq=seqs[uid],
                body=body,
                conversation_id=message.conversation_id,
                created_at=message.created_at,
            )
            for uid in recipients
        ]
    )
    live: list[tuple[str, LiveMessage]] = [
        (user_group(event.recipient_id), {"type": STREAM_EVENT, "seq": event.seq, "event": event_payload(event)})
        for event in events
    ]
    transaction.on_commit(lambda: events_publish(live))
    return events


_background: set[asyncio.Task] = set()


async def _group_send_all(messages: list[tuple[str, LiveMessage]]) -> None:
    layer = get_channel_layer()
    for group, message in messages:
        try:
            await layer.group_send(group, message)
        except Exception:
            # The log is durable: a stream that misses this live copy catches up from the
            # database at its next event or reconnect.
            logger.exception("Publishing to %s failed", group)


def events_publish(messages: list[tuple[str, LiveMessage]]) -> None:
    """Hand committed events to the channel layer (at-most-once; the log is the source of truth)."""
    if not messages:
        return
    EVENTS_PUBLISHED.inc(len(messages))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Called from async code on this thread (async_to_sync would refuse): send in the background.
        task = loop.create_task(_group_send_all(messages))
        _background.add(task)
        task.add_done_callback(_background.discard)
    else:
        async_to_sync(_group_send_all)(messages)


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@transaction.atomic
def ticket_issue(*, user: User) -> TicketIssued:
    seconds = settings.CORTEX["TICKET_SECONDS"]
    ticket = secrets.token_urlsafe(32)
    StreamTicket.objects.create(
        user=user, ticket_hash=_ticket_hash(ticket), expires_at=timezone.now() + timedelta(seconds=seconds)
    )
    return {"ticket": ticket, "expires_in": seconds}


@transaction.atomic
def ticket_consume(*, ticket: str) -> User | None:
    """The active user a valid ticket belongs to, or None. The ticket is gone either way.

    The conditional DELETE is what makes a ticket single use: of two concurrent redemptions,
    only one deletes the row.
    """
    if not ticket or len(ticket) > 200:
        return None
    record = StreamTicket.objects.filter(ticket_hash=_ticket_hash(ticket)).select_related("user").first()
    if record is None:
        return None
    deleted, _ = StreamTicket.objects.filter(pk=record.pk).delete()
    if deleted != 1 or record.expires_at <= timezone.now() or not record.user.is_active:
        return None
    return record.user


@transaction.atomic
def events_prune(*, now: Any = None) -> PruneResult:
    """Drop events past retention (raising each user's reset floor), old idempotency records and
    expired tickets."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.CORTEX["EVENT_RETENTION_HOURS"])
    old = Event.objects.filter(created_at__lt=cutoff)
    floors = old.values("recipient_id").annotate(floor=Max("seq")).order_by("recipient_id")
    for row in floors:
        # A floor only grows: pruning never makes a lost range look complete again.
        EventCursor.objects.filter(user_id=row["recipient_id"], pruned_through__lt=row["floor"]).update(
            pruned_through=row["floor"]
        )
    events, _ = old.delete()
    EventBody.objects.filter(created_at__lt=cutoff, deliveries__isnull=True).delete()
    idem_cutoff = now - timedelta(hours=settings.CORTEX["IDEMPOTENCY_HOURS"])
    records, _ = IdempotencyRecord.objects.filter(created_at__lt=idem_cutoff).delete()
    tickets, _ = StreamTicket.objects.filter(expires_at__lte=now).delete()
    return {"events": events, "idempotency_records": records, "tickets": tickets}
