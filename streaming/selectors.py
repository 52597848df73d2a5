"""Reads of the event log for streams: where a user's log stands, and pages of it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from django.db import connection
from django.db.models import Q, TextField
from django.db.models.functions import Cast

from accounts.models import User
from streaming.models import Event, EventCursor
from streaming.services import event_json


class LogPosition(NamedTuple):
    head: int  # last committed seq of the user's log (0: no event yet)
    floor: int  # highest seq lost to retention


def log_position(*, user_id: uuid.UUID) -> LogPosition:
    cursor = EventCursor.objects.filter(user_id=user_id).values_list("last_seq", "pruned_through").first()
    return LogPosition(*cursor) if cursor else LogPosition(0, 0)


def event_page(
    *,
    user_id: uuid.UUID,
    after: int,
    through: int,
    conversation_id: uuid.UUID | str | None = None,
    limit: int = 500,
) -> list[tuple[int, str]]:
    """The user's events with `after < seq <= through`, oldest first, optionally of one conversation,
    each as its JSON text (the stored body is read as text and never decoded: replays are fast)."""
    events = Event.objects.filter(recipient_id=user_id, seq__gt=after, seq__lte=through)
    if conversation_id is not None:
        events = events.filter(conversation_id=conversation_id)
    rows = events.order_by("seq").values_list("seq", Cast("body__payload", output_field=TextField()))[:limit]
    return [(seq, event_json(seq, body)) for seq, body in rows]


def users_may_stream(*, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime | None]:
    """Those of these users who are still active (and not deleted), each with the moment their
    earlier stream credentials ended (`User.sessions_ended_at`: logout, password change)."""
    return dict(User.objects.filter(id__in=user_ids, is_active=True).values_list("id", "sessions_ended_at"))


def user_may_stream(*, user_id: uuid.UUID, issued_at: datetime) -> bool:
    """Still active (and not deleted), and the stream's credential was issued after the user's last
    logout or password change."""
    return (
        User.objects.filter(id=user_id, is_active=True)
        .filter(Q(sessions_ended_at__isnull=True) | Q(sessions_ended_at__lte=issued_at))
        .exists()
    )


def position_if_may_stream(*, user_id: uuid.UUID, issued_at: datetime) -> LogPosition | None:
    """`user_may_stream` and `log_position` in one statement (a stream's read at open): None when
    the user may not stream. Written out: the ORM's query building was most of an open's CPU."""
    user_table, cursor_table = User._meta.db_table, EventCursor._meta.db_table
    sql = (
        f"SELECT c.last_seq, c.pruned_through FROM {user_table} u LEFT JOIN {cursor_table} c ON c.user_id = u.id"
        " WHERE u.id = %s AND u.is_active AND (u.sessions_ended_at IS NULL OR u.sessions_ended_at <= %s)"
    )
    params = [
        User._meta.pk.get_db_prep_value(user_id, connection),
        connection.ops.adapt_datetimefield_value(issued_at),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return LogPosition(row[0] or 0, row[1] or 0)
