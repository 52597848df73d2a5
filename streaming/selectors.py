"""Reads of the event log for streams: where a user's log stands, and pages of it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

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
    conversation_id: uuid.UUID | None = None,
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
