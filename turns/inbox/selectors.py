"""Reads of the inbox, and its one access check: a request is visible to its conversation's
participants (the conversation's check decides), answerable only by its requester."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404
from django.utils import timezone

from accounts.models import User
from turns.inbox.models import InboxRequest
from workspaces.selectors import _as_uuid, conversation_get_for_user, iso


def inbox_request_get_for_user(*, user: User, request_id: object) -> InboxRequest:
    """A missing request and one in a conversation the user is not part of are the same 404 (a
    participant who is not the requester sees it, and is refused the answer: 403)."""
    request = InboxRequest.objects.filter(id=_as_uuid(request_id)).first()
    if request is None:
        raise Http404
    conversation_get_for_user(user=user, conversation_id=request.conversation_id)
    return request


def inbox_open_for_user(*, user: User) -> list[InboxRequest]:
    """The requests waiting for the user's answer, in every conversation, oldest first (unexpired:
    an expired one can no longer be answered, even before its turn has resumed)."""
    return list(
        InboxRequest.objects.filter(user=user, status=InboxRequest.Status.OPEN, expires_at__gt=timezone.now()).order_by(
            "created_at", "id"
        )
    )


def inbox_open_count(*, user_id: uuid.UUID) -> int:
    return InboxRequest.objects.filter(user_id=user_id, status=InboxRequest.Status.OPEN).count()


def question_answer_of(*, request_id: uuid.UUID) -> dict[str, Any] | None:
    """The answer to a request once it is answered or expired (None while it is open)."""
    row = InboxRequest.objects.filter(id=request_id).values_list("status", "answer").first()
    if row is None or row[0] == InboxRequest.Status.OPEN:
        return None
    return row[1]


def inbox_item(request: InboxRequest) -> dict[str, Any]:
    """What a client needs to render it: the event's fields, and the request's own."""
    return {
        **request.data,
        "id": str(request.id),
        "kind": request.kind,
        "status": request.status,
        "turn_id": str(request.turn_id),
        "conversation_id": str(request.conversation_id),
        "created_at": iso(request.created_at),
        "expires_at": iso(request.expires_at),
        "answer": request.answer,
        "answered_at": iso(request.answered_at) if request.answered_at else None,
    }
