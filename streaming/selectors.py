"""Reads of the event log for streams: where a user's log stands, and pages of it."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from accounts.models import User
from streaming.models import Event, EventCursor
from streaming.services import EventPayload, event_payload


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
) -> list[tuple[int, EventPayload]]:
    """The user's events with `after < seq <= through`, oldest first, optionally of one conversation."""
    events = Event.objects.filter(recipient_id=user_id, seq__gt=after, seq__lte=through)
    if conversation_id is not None:
        events = events.filter(conversation_id=conversation_id)
    return [(event.seq, event_payload(event)) for event in events.select_related("body").order_by("seq")[:limit]]


def user_may_stream(*, user_id: uuid.UUID) -> bool:
    """Still active (and not deleted): an open stream re-checks this now and then."""
    return User.objects.filter(id=user_id, is_active=True).exists()
