"""Reads of turns, and the one access check: a turn is visible to its conversation's participants."""

from __future__ import annotations

import uuid

from django.http import Http404

from accounts.models import User
from turns.models import Turn
from workspaces.models import Message
from workspaces.selectors import _as_uuid, conversation_get_for_user


def turn_get_for_user(*, user: User, turn_id: object) -> Turn:
    """The conversation's access check decides (participants only); a missing turn and one in a
    conversation the user is not part of are the same 404."""
    turn = Turn.objects.filter(id=_as_uuid(turn_id)).first()
    if turn is None:
        raise Http404
    conversation_get_for_user(user=user, conversation_id=turn.conversation_id)
    return turn


def conversation_history(*, conversation_id: uuid.UUID, before: uuid.UUID, limit: int) -> list[tuple[str, str]]:
    """The `limit` messages before `before` (an input), oldest first, as (author, content)."""
    anchor = Message.objects.filter(id=before).values_list("created_at", flat=True).first()
    if anchor is None or limit == 0:
        return []
    rows = (
        Message.objects.filter(conversation_id=conversation_id, created_at__lt=anchor)
        .order_by("-created_at", "-id")
        .values_list("author", "content")[:limit]
    )
    return list(reversed(rows))
