"""One turn event for the logs of its conversation's participants (`streaming.services.events_append`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone

from streaming.services import NewEvent


def turn_event(
    turn: Any, type_: str, data: dict[str, Any], recipients: list[uuid.UUID], *, now: datetime | None = None
) -> NewEvent:
    """`turn`: anything with `id`, `user_id`, `conversation_id` (a Turn, or the worker's TurnRow);
    every turn event carries `data.turn_id`, and is the event of the user whose input started it."""
    return NewEvent(
        type=type_,
        user_id=turn.user_id,
        conversation_id=turn.conversation_id,
        data={"turn_id": str(turn.id), **data},
        recipient_ids=recipients,
        created_at=now or timezone.now(),
    )
