"""Writes of the streaming app: the event log, its live publication, tickets, retention.

`events_record_for_messages` runs inside the transaction of `workspaces.services.messages_create`
(through the `messages_created` signal), so an input and its events commit or roll back together.
The channel-layer publication happens only after that commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import User
from common.metrics import EVENTS_PUBLISHED
from streaming.hub import hub
from streaming.models import Event, EventBody, EventCursor, StreamTicket
from streaming.signals import events_appended
from workspaces.models import IdempotencyRecord
from workspaces.selectors import iso
from workspaces.services import CreatedInput
from workspaces.writer import caller_loop

logger = logging.getLogger(__name__)

STREAM_EVENT = "stream.event"  # channel-layer message type, handled by the consumers
STREAM_REVOKE = "stream.revoke"  # ends every stream of a user (deactivated or deleted)


class LiveMessage(TypedDict):
    type: str  # STREAM_EVENT
    seq: int
    conversation_id: str | None  # for the streams' `?conversation_id=` filter
    json: str  # the event's JSON, with its `id`: encoded once for every stream of the recipient


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


def event_json(seq: int, body_json: str) -> str:
    """The event's JSON on a recipient's streams: its stored body (a JSON object) with `id` first."""
    return f'{{"id":"{seq}",{body_json[1:]}' if body_json != "{}" else f'{{"id":"{seq}"}}'


def _encode(payload: dict[str, Any]) -> str:
    # JSON never contains a raw newline, so the text is also a valid SSE `data:` line.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def cursor_ensure(*, user_id: uuid.UUID) -> None:
    """Give a new user their event cursor, in the transaction that creates the user."""
    EventCursor.objects.get_or_create(user_id=user_id)


def _seqs_allocate(counts: dict[uuid.UUID, int]) -> tuple[dict[uuid.UUID, int], set[uuid.UUID]]:
    """Reserve `counts[user]` consecutive seqs for each recipient; returns each one's first, and
    the recipients with a subscription (`EventCursor.subscriptions`, read in the same statement).

    The cursor rows stay locked until the caller's transaction ends. Rows are locked in one order
    (by user id) so concurrent writers cannot deadlock. On SQLite FOR UPDATE is a no-op, but
    IMMEDIATE transactions already serialize all writers.
    """
    recipient_ids = sorted(counts)
    connection = transaction.get_connection()
    if len(set(counts.values())) == 1:
        # One statement instead of a read and a write (`_seqs_reserve`).
        count = next(iter(counts.values()))
        reserved, subscribed = _seqs_reserve(connection, recipient_ids, count)
        missing = [user_id for user_id in recipient_ids if user_id not in reserved]
        if missing:  # users made without signals (see below): give them a cursor, then reserve
            EventCursor.objects.bulk_create([EventCursor(user_id=uid) for uid in missing], ignore_conflicts=True)
            more, more_subscribed = _seqs_reserve(connection, missing, count)
            reserved.update(more)
            subscribed |= more_subscribed
        return reserved, subscribed
    locked = EventCursor.objects.select_for_update().filter(user_id__in=recipient_ids).order_by("user_id")
    current = {
        user_id: (last_seq, subs)
        for user_id, last_seq, subs in locked.values_list("user_id", "last_seq", "subscriptions")
    }
    if len(current) < len(recipient_ids):
        # Only for users made without signals (bulk_create): cursors are created with the user
        # (`cursor_ensure`), because inserting one here, while holding locks on others, could
        # deadlock against a writer doing the same in another order.
        EventCursor.objects.bulk_create(
            [EventCursor(user_id=uid) for uid in recipient_ids if uid not in current], ignore_conflicts=True
        )
        current = {
            user_id: (last_seq, subs)
            for user_id, last_seq, subs in locked.values_list("user_id", "last_seq", "subscriptions")
        }
    by_count: dict[int, list[uuid.UUID]] = {}
    for user_id in recipient_ids:
        by_count.setdefault(counts[user_id], []).append(user_id)
    for count, user_ids in by_count.items():  # one UPDATE per distinct count, not per user
        EventCursor.objects.filter(user_id__in=user_ids).update(last_seq=F("last_seq") + count)
    return (
        {user_id: last_seq + 1 for user_id, (last_seq, _) in current.items()},
        {user_id for user_id, (_, subs) in current.items() if subs},
    )


def _seqs_reserve(
    connection: Any, user_ids: list[uuid.UUID], count: int
) -> tuple[dict[uuid.UUID, int], set[uuid.UUID]]:
    """`UPDATE ... RETURNING`: each user's first reserved seq, for users with a cursor (the caller
    gives the others one, then reserves theirs), and who has a subscription. SQLite (>= 3.35): the
    IMMEDIATE transaction already holds the database's only write lock, so there is no lock order
    to keep. PostgreSQL: the rows are locked in user id order first (`FOR UPDATE` in a sorted
    read), then updated, in the same statement; the update sees each row's newest version."""
    field = EventCursor._meta.get_field("user")
    params = [field.get_db_prep_value(user_id, connection) for user_id in user_ids]
    table = connection.ops.quote_name(EventCursor._meta.db_table)
    column = connection.ops.quote_name(field.column)
    listed = ", ".join(["%s"] * len(params))
    if connection.vendor == "sqlite":
        statement = (
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE {column} IN ({listed})"
            f" RETURNING {column}, last_seq, subscriptions"
        )
    else:
        statement = (
            f"WITH locked AS (SELECT {column} FROM {table} WHERE {column} IN ({listed}) ORDER BY {column} FOR UPDATE)"
            f" UPDATE {table} c SET last_seq = c.last_seq + %s FROM locked WHERE c.{column} = locked.{column}"
            f" RETURNING c.{column}, c.last_seq, c.subscriptions"
        )
    with connection.cursor() as cursor:
        cursor.execute(statement, [count, *params] if connection.vendor == "sqlite" else [*params, count])
        rows = cursor.fetchall()
    by_value = dict(zip(params, user_ids, strict=True))
    return (
        {by_value[user]: last_seq - count + 1 for user, last_seq, _ in rows},
        {by_value[user] for user, _, subs in rows if subs},
    )


def cursor_lock(*, user_id: uuid.UUID) -> int:
    """Lock a user's cursor row in the caller's transaction (made if missing) and return its
    `subscriptions`: the lock every change of a user's subscriptions takes first, so an append
    (which holds it while it reads them) sees a subscription either not at all (its events came
    first) or with its rows committed. Taken before any other row of the change (lock order)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("cursor_lock must run inside the caller's transaction")
    EventCursor.objects.get_or_create(user_id=user_id)
    return EventCursor.objects.select_for_update().filter(user_id=user_id).values_list("subscriptions", flat=True)[0]


def subscriptions_set(*, user_ids: Iterable[uuid.UUID], count: int) -> None:
    """Record how many subscriptions these users have, in the transaction that changed them,
    after `cursor_lock` (or, for a correction to 0, inside an append, which holds the lock)."""
    EventCursor.objects.filter(user_id__in=list(user_ids)).update(subscriptions=count)


@dataclass(frozen=True)
class NewEvent:
    """One event to append to the logs of its recipients (stored once, one log entry each)."""

    type: str
    user_id: uuid.UUID  # whose event it is: the input's sender, or the user whose input started a turn
    conversation_id: uuid.UUID | None
    data: dict[str, Any]
    recipient_ids: list[uuid.UUID]
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    message: Any = None  # the workspaces.Message it describes, if any (deleted with it)


@dataclass(frozen=True)
class AppendedEvent:
    """One entry just appended to one recipient's log (what `events_appended` receivers get)."""

    recipient_id: uuid.UUID
    seq: int  # the event's id on that recipient's streams
    type: str
    data: dict[str, Any]
    created_at: datetime


def _insert(
    connection: Any, model: Any, names: list[str], rows: list[tuple[Any, ...]], *, returning: bool = False
) -> list[Any]:
    """`bulk_create` written out for the log's two tables (issue 29: building the model objects and
    the ORM's INSERT was most of an append's CPU). Each value goes through its field's
    `get_db_prep_save`, as the ORM's would; batched as the ORM batches; with `returning`, the new
    primary keys in row order (`RETURNING`, as `bulk_create` reads them on SQLite and PostgreSQL)."""
    fields = [model._meta.get_field(name) for name in names]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    one = f"({', '.join(['%s'] * len(fields))})"
    tail = f" RETURNING {connection.ops.quote_name(model._meta.pk.column)}" if returning else ""
    size = max(connection.ops.bulk_batch_size(fields, rows), 1)
    ids: list[Any] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            params = [
                field.get_db_prep_save(value, connection)
                for row in batch
                for field, value in zip(fields, row, strict=True)
            ]
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(batch))}{tail}", params)
            if returning:
                ids.extend(row[0] for row in cursor.fetchall())
    return ids


def events_append(*, events: list[NewEvent]) -> list[tuple[str, LiveMessage]]:
    """Append events, in order, to each recipient's log inside the caller's transaction.

    Returns their live copies, each body encoded once for all its recipients: the caller publishes
    them (`events_publish`) once its transaction has committed, never before.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("events_append must run inside the caller's transaction")
    counts: dict[uuid.UUID, int] = {}
    for entry in events:
        for user_id in set(entry.recipient_ids):
            counts[user_id] = counts.get(user_id, 0) + 1
    if not counts:
        return []
    next_seq, subscribed = _seqs_allocate(counts)
    bodies: list[tuple[str, Any, dict[str, Any], datetime]] = []
    encoded: list[str] = []
    for entry in events:
        payload = {
            "type": entry.type,
            "user_id": str(entry.user_id),
            "conversation_id": str(entry.conversation_id) if entry.conversation_id else None,
            "data": entry.data,
            "metadata": entry.metadata,
            "timestamp": iso(entry.created_at),
        }
        message_id = entry.message.pk if entry.message is not None else None
        bodies.append((entry.type, message_id, payload, entry.created_at))
        encoded.append(_encode(payload))
    connection = transaction.get_connection()
    body_ids = _insert(
        connection,
        EventBody,
        ["type", "message", "payload", "created_at"],
        bodies,
        returning=True,
    )
    rows: list[tuple[uuid.UUID, int, int, uuid.UUID | None, datetime]] = []
    live: list[tuple[str, LiveMessage]] = []
    appended: list[AppendedEvent] = []
    for entry, body_id, body_json in zip(events, body_ids, encoded, strict=True):
        conversation_id = str(entry.conversation_id) if entry.conversation_id else None
        for user_id in sorted(set(entry.recipient_ids)):
            seq = next_seq[user_id]
            next_seq[user_id] = seq + 1
            rows.append((user_id, seq, body_id, entry.conversation_id, entry.created_at))
            live.append(
                (
                    user_group(user_id),
                    {
                        "type": STREAM_EVENT,
                        "seq": seq,
                        "conversation_id": conversation_id,
                        "json": event_json(seq, body_json),
                    },
                )
            )
            if user_id in subscribed:
                appended.append(
                    AppendedEvent(
                        recipient_id=user_id, seq=seq, type=entry.type, data=entry.data, created_at=entry.created_at
                    )
                )
    _insert(connection, Event, ["recipient", "seq", "body", "conversation", "created_at"], rows)
    # Only for recipients with a subscription (read with their seqs): nothing more for the others.
    if appended and events_appended.has_listeners(Event):
        events_appended.send(sender=Event, entries=appended)
    return live


def events_record_for_messages(*, created: list[CreatedInput]) -> None:
    """Append an "input" event per message to each of its recipients' logs, inside the input's
    transaction; publish them once it commits."""
    live = events_append(
        events=[
            NewEvent(
                type="input",
                user_id=entry.message.sender_id,
                conversation_id=entry.message.conversation_id,
                data=dict(entry.data),
                metadata=entry.message.metadata,
                recipient_ids=entry.recipient_ids,
                created_at=entry.message.created_at,
                message=entry.message,
            )
            for entry in created
        ]
    )
    transaction.on_commit(lambda: events_publish(live))


async def _group_send_all(messages: list[tuple[str, LiveMessage]]) -> None:
    try:
        await hub().publish_now(messages)
    except Exception:
        # The log is durable: a stream that misses this live copy catches up from the database at
        # its next event or reconnect.
        logger.exception("Publishing %d live copies failed", len(messages))


def _publish(messages: list[tuple[str, LiveMessage]]) -> None:
    try:
        hub().publish(messages)
    except Exception:
        logger.exception("Publishing %d live copies failed", len(messages))


def events_publish(messages: list[tuple[str, LiveMessage]]) -> None:
    """Hand committed events to the process's streams and the channel layer (at-most-once; the log
    is the source of truth): `streaming.hub`, on the event loop."""
    if not messages:
        return
    EVENTS_PUBLISHED.inc(len(messages))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Called from async code on this thread: right after the caller's step.
        loop.call_soon(_publish, messages)
    elif (target := caller_loop()) is not None:
        # The input writer's thread, after its commit: the inputs' own loop hands them out, without
        # the writer waiting for it (the writer must not stall behind the streams).
        target.call_soon_threadsafe(_publish, messages)
    else:
        async_to_sync(_group_send_all)(messages)


async def events_publish_now(messages: list[tuple[str, LiveMessage]]) -> None:
    """`events_publish` for async code that wants the sends done before it goes on (the turn
    worker, the internal relay): still at-most-once, the log stays the source of truth."""
    if messages:
        EVENTS_PUBLISHED.inc(len(messages))
        await _group_send_all(messages)


def live_messages_valid(messages: Any) -> list[tuple[str, LiveMessage]] | None:
    """Live copies sent by another process of this deployment (`/internal/events`), checked to be
    exactly what `events_append` makes: user groups and stream events, nothing else."""
    if not isinstance(messages, list):
        return None
    valid: list[tuple[str, LiveMessage]] = []
    for item in messages:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        group, message = item
        if not (isinstance(group, str) and _GROUP.fullmatch(group) and isinstance(message, dict)):
            return None
        seq, conversation_id, text = message.get("seq"), message.get("conversation_id"), message.get("json")
        if (
            message.get("type") != STREAM_EVENT
            or set(message) != {"type", "seq", "conversation_id", "json"}
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or not (conversation_id is None or isinstance(conversation_id, str))
            or not isinstance(text, str)
            or not text.startswith(f'{{"id":"{seq}",')  # an event of this seq, as `event_json` writes it
            or "\n" in text  # one SSE `data:` line
        ):
            return None
        valid.append((group, {"type": STREAM_EVENT, "seq": seq, "conversation_id": conversation_id, "json": text}))
    return valid


_GROUP = re.compile(r"user\.[0-9a-f]{32}")


def streams_revoke(*, user_id: uuid.UUID, before: datetime | None = None) -> None:
    """End every open stream of a user (or those whose credential was issued `before` then), on
    every process, once the caller's transaction commits.

    At most once, like every channel-layer message: each stream also re-checks its user every
    `STREAM_RECHECK_SECONDS`, which bounds how long a lost message leaves it open.
    """
    body: dict[str, Any] = {"type": STREAM_REVOKE}
    if before is not None:
        body["before"] = before.timestamp()
    message: tuple[str, dict[str, Any]] = (user_group(user_id), body)
    transaction.on_commit(lambda: events_publish([message]))  # type: ignore[list-item]


def events_forget_conversation(*, conversation_id: uuid.UUID, user_ids: Iterable[uuid.UUID]) -> int:
    """Removed participants lose the conversation's events from their logs (no replay of them).

    Their seqs stay allocated: a stream skips the holes like any filtered event.
    """
    ids = list(user_ids)
    if not ids:
        return 0
    deleted, _ = Event.objects.filter(recipient_id__in=ids, conversation_id=conversation_id).delete()
    return deleted


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@transaction.atomic
def ticket_issue(*, user: User, credential_expires_at: datetime | None = None) -> TicketIssued:
    """`credential_expires_at`: when the requesting access token expires (the stream ends then)."""
    seconds = settings.CORTEX["TICKET_SECONDS"]
    ticket = secrets.token_urlsafe(32)
    StreamTicket.objects.create(
        user=user,
        ticket_hash=_ticket_hash(ticket),
        expires_at=timezone.now() + timedelta(seconds=seconds),
        credential_expires_at=credential_expires_at,
    )
    return {"ticket": ticket, "expires_in": seconds}


def ticket_consume(*, ticket: str) -> StreamTicket | None:
    """The ticket, with its active user, if it is valid; None otherwise. It is gone either way.

    An unknown ticket costs one read, no write transaction (garbage cannot take SQLite's write
    lock). The conditional DELETE is what makes a ticket single use: of two concurrent
    redemptions, only one deletes the row.
    """
    if not ticket or len(ticket) > 200:
        return None
    record = StreamTicket.objects.filter(ticket_hash=_ticket_hash(ticket)).select_related("user").first()
    if record is None:
        return None
    with transaction.atomic():
        deleted, _ = StreamTicket.objects.filter(pk=record.pk).delete()
    if deleted != 1 or record.expires_at <= timezone.now() or not record.user.is_active:
        return None
    return record


STREAM_COOKIE = "cortex_stream"
STREAM_COOKIE_PATH = "/output/"
_STREAM_COOKIE_SALT = "cortex.streaming.stream-cookie"


def stream_cookie_issue(*, user: User, credential_expires_at: datetime | None = None) -> tuple[str, datetime]:
    """The value of the browser's stream cookie (set with each ticket), and when it expires.

    Unlike a ticket it may be used many times until it expires: EventSource's built-in reconnect
    reuses its URL, whose ticket is spent, and sends this cookie along. It is signed (nothing is
    stored), names the user, carries the user's session hash (a password change ends it) and its
    expiry: STREAM_COOKIE_SECONDS, and no later than `credential_expires_at` (the access token
    that asked for it), so a stream it opens ends when a ticket's would.
    """
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.CORTEX["STREAM_COOKIE_SECONDS"])
    if credential_expires_at is not None:
        expires_at = min(expires_at, credential_expires_at)
    payload = f"{user.pk}:{int(expires_at.timestamp())}:{now.timestamp():.6f}:{user.get_session_auth_hash()}"
    return signing.TimestampSigner(salt=_STREAM_COOKIE_SALT).sign(payload), expires_at


def stream_cookie_user(*, value: str) -> tuple[User, datetime, datetime] | None:
    """The active user a valid, unexpired stream cookie belongs to, when it expires and when it was
    issued (a logout after that refuses it: `streaming.auth`); or None."""
    if not value or len(value) > 500:
        return None
    try:
        payload = signing.TimestampSigner(salt=_STREAM_COOKIE_SALT).unsign(
            value, max_age=settings.CORTEX["STREAM_COOKIE_SECONDS"]
        )
        user_id, expires, issued, session_hash = payload.split(":", 3)
        expires_at = datetime.fromtimestamp(int(expires), tz=UTC)
        issued_at = datetime.fromtimestamp(float(issued), tz=UTC)
    except (signing.BadSignature, ValueError):  # also SignatureExpired
        return None
    if expires_at <= timezone.now():
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or not constant_time_compare(session_hash, user.get_session_auth_hash()):
        return None
    return user, expires_at, issued_at


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
