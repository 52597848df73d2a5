"""Reads of turns, and the one access check: a turn is visible to its conversation's participants."""

from __future__ import annotations

import re
import uuid

from django.db.models import Q
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


def conversation_history(
    *, conversation_id: uuid.UUID, before: uuid.UUID, limit: int
) -> list[tuple[str, uuid.UUID, str]]:
    """The `limit` messages before `before` (an input), oldest first, as (author, sender id, content)."""
    anchor = Message.objects.filter(id=before).values_list("created_at", flat=True).first()
    if anchor is None or limit == 0:
        return []
    rows = (
        Message.objects.filter(conversation_id=conversation_id, created_at__lt=anchor)
        .order_by("-created_at", "-id")
        .values_list("author", "sender_id", "content")[:limit]
    )
    return list(reversed(rows))


def _name_base(name: str, email: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip() or email.split("@")[0]).strip("_")
    return (base or "participant")[:60]


def speaker_names(*, conversation_id: uuid.UUID, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """A name for each of these users and each participant, as the chat API's `name` field takes it
    (`^[A-Za-z0-9_-]{1,64}$`): their display name or the local part of their email, and distinct
    (a suffix for a name taken by a user with a smaller id), so a model can tell people apart."""
    people = User.objects.filter(Q(id__in=user_ids) | Q(conversations__id=conversation_id)).distinct()
    names: dict[uuid.UUID, str] = {}
    taken: set[str] = set()
    for user_id, name, email in sorted(people.values_list("id", "name", "email")):
        base = _name_base(name, email)
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate.lower())
        names[user_id] = candidate
    return names
