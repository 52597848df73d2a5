"""Writes of the inbox: a turn pausing on a request, the requester's answer, a waiting turn resuming.

A waiting turn holds nothing: no lease, no worker task, no connection. Its responder's state is in
`Turn.state` and the request in `InboxRequest`. `Turn.resume_at` says when a worker may claim it
again: the request's expiry while it is open, now once it is answered (the claim's one indexed
condition, `turns.services._due`). Whichever worker claims it resumes it (`inbox_resume`).

The turn's own writes call these inside their transactions (`turns.services`); events are returned
as `NewEvent`s and published by the caller after the commit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import audit
from accounts.models import User
from common.errors import CortexError, ErrorCode
from common.wakeups import wake
from streaming.services import NewEvent, events_append, events_publish
from turns.events import turn_event
from turns.inbox.models import InboxRequest
from turns.models import Turn
from workspaces.selectors import conversation_recipient_ids, iso

APPROVAL_REQUESTED = "approval.requested"
APPROVAL_RESOLVED = "approval.resolved"
QUESTION_ASKED = "question.asked"
QUESTION_ANSWERED = "question.answered"


@dataclass
class Pause:
    """What a responder asks before it can go on (plain data from the worker), or, for a `task`
    pause, what it waits for: an expert's task, polled again in `resume_in` seconds (no request,
    no event: the turn simply waits, holding nothing, and any worker claims it when it is due)."""

    kind: Literal["approval", "question", "task"]
    # The event's own fields: expert, tool, arguments (approval); expert, message, schema | url (question).
    data: dict[str, Any]
    state: dict[str, Any]  # what the responder needs to go on (JSON)
    resume_in: float = 0.0  # `task`: seconds until the next poll
    # The turn's events written with the pause, in its transaction (a task's `tool.task`: whoever
    # sees the task's id in the log can rely on its being on the turn).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def holds_task(state: dict[str, Any] | None) -> bool:
    """The waiting turn's call runs at an expert as a task (its id is in the saved call): cancelling
    the turn has to reach the task, so a worker resumes it to send `tasks/cancel`."""
    return bool(((state or {}).get("asked") or {}).get("task_id"))


def schema_defaults_apply(schema: Any, content: Any) -> Any:
    """An `accept` answer with the schema's `default`s filled in for the fields it leaves out
    (MCP elicitation: a form's defaults are the answer unless the person changes them). Applied
    before validation, so a default is checked like anything the person typed. A question's schema
    is flat: only its top-level properties have defaults here."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not isinstance(content, dict):
        return content  # nothing to fill in (an unusable schema, or content that is no object, is refused next)
    filled = dict(content)
    for name, spec in properties.items():
        if isinstance(name, str) and name not in filled and isinstance(spec, dict) and "default" in spec:
            filled[name] = spec["default"]
    return filled


def _event(turn: Turn, type_: str, data: dict[str, Any], recipients: list[uuid.UUID], now: datetime) -> NewEvent:
    return turn_event(turn, type_, data, recipients, now=now)


def pause_refusal(pause_kind: str, data: dict[str, Any]) -> str | None:
    """Why a request cannot be put to the requester (too large to show, or a question whose schema
    cannot be used: `common.json_schemas`), or None."""
    cortex = settings.CORTEX
    if len(str(data.get("message", ""))) > cortex["INBOX_MESSAGE_MAX_CHARS"]:
        return f"The expert's question is longer than {cortex['INBOX_MESSAGE_MAX_CHARS']} characters."
    shown = {key: data.get(key) for key in ("schema", "arguments", "url")}
    if len(json.dumps(shown, default=str).encode()) > cortex["INBOX_SCHEMA_MAX_BYTES"]:
        return f"The {pause_kind} is larger than {cortex['INBOX_SCHEMA_MAX_BYTES']} bytes (INBOX_SCHEMA_MAX_BYTES)."
    if pause_kind == "question" and data.get("url") is None:
        # Imported by the first question with a form: jsonschema is for it alone, and every Django
        # process loads this module (turns.receivers).
        from common.json_schemas import schema_problem

        problem = schema_problem(data.get("schema"))
        if problem is not None:
            return f"The expert's question cannot be asked: {problem}"
    return None


def turn_pause(*, turn: Turn, pause: Pause, recipients: list[uuid.UUID], now: datetime) -> list[NewEvent]:
    """Inside the turn's write (its row locked): the turn leaves its worker and waits for the
    requester; every participant's log gets the request. A `task` pause asks no one: the turn is
    due again in `resume_in` seconds (its task's next poll)."""
    left = (turn.deadline - now).total_seconds() if turn.deadline else settings.CORTEX["TURN_TIME_LIMIT_SECONDS"]
    if pause.kind == "task":
        turn.status, turn.lease_owner, turn.lease_expires_at = Turn.Status.WAITING, "", None
        turn.resume_at, turn.time_left, turn.state = (
            now + timedelta(seconds=pause.resume_in),
            max(left, 1.0),
            pause.state,
        )
        turn.save(update_fields=["status", "lease_owner", "lease_expires_at", "resume_at", "time_left", "state"])
        return []
    expires_at = now + timedelta(seconds=settings.CORTEX["TURN_APPROVAL_SECONDS"])
    request = InboxRequest(
        turn=turn,
        user_id=turn.user_id,
        conversation_id=turn.conversation_id,
        kind=pause.kind,
        created_at=now,
        expires_at=expires_at,
    )
    request.data = {"request_id": str(request.id), **pause.data, "expires_at": iso(expires_at)}
    request.save()
    turn.status, turn.lease_owner, turn.lease_expires_at = Turn.Status.WAITING, "", None
    turn.resume_at, turn.time_left, turn.state = expires_at, max(left, 1.0), pause.state
    turn.save(update_fields=["status", "lease_owner", "lease_expires_at", "resume_at", "time_left", "state"])
    type_ = APPROVAL_REQUESTED if pause.kind == "approval" else QUESTION_ASKED
    return [_event(turn, type_, request.data, recipients, now)]


def question_open(
    *, turn: Turn, data: dict[str, Any], expires_at: datetime, recipients: list[uuid.UUID], now: datetime
) -> list[NewEvent]:
    """Inside the turn's write: a question an expert asks in the middle of a call (the older
    `elicitation/create` form). The call stays open and the turn keeps running (its worker awaits
    the answer, `question_answer_of`), until the call's own deadline (`expires_at`)."""
    request = InboxRequest(
        id=uuid.UUID(data["request_id"]),
        turn=turn,
        user_id=turn.user_id,
        conversation_id=turn.conversation_id,
        kind=InboxRequest.Kind.QUESTION,
        created_at=now,
        expires_at=expires_at,
    )
    request.data = {**data, "expires_at": iso(expires_at)}
    request.save()
    return [_event(turn, QUESTION_ASKED, request.data, recipients, now)]


def question_expire(*, request_id: uuid.UUID) -> list[tuple[str, Any]]:
    """A mid-call question whose call can wait no longer: expired, unless an answer won first
    (then nothing changes). Returns the live events to publish (`question.answered` "cancel")."""
    now = timezone.now()
    with transaction.atomic():
        expired = InboxRequest.objects.filter(id=request_id, status=InboxRequest.Status.OPEN).update(
            status=InboxRequest.Status.EXPIRED, answer={"action": "cancel"}, answered_at=now
        )
        if not expired:
            return []
        request = InboxRequest.objects.select_related("turn").get(id=request_id)
        recipients = conversation_recipient_ids(conversation_ids={request.conversation_id}).get(
            request.conversation_id, []
        )
        return events_append(events=[_resolved(request, {"action": "cancel"}, request.turn, recipients, now)])


def _resolved(request: InboxRequest, answer: dict[str, Any], turn: Turn, recipients: list[uuid.UUID], now: datetime):
    if request.kind == InboxRequest.Kind.APPROVAL:
        data = {"request_id": str(request.id), "decision": answer["decision"]}
        return _event(turn, APPROVAL_RESOLVED, data, recipients, now)
    data = {"request_id": str(request.id), "action": answer["action"]}
    return _event(turn, QUESTION_ANSWERED, data, recipients, now)


def turns_resume(*, turns: list[Turn], recipients: dict[uuid.UUID, list[uuid.UUID]], now: datetime):
    """Inside the claim (the turns locked, about to run again): each waiting turn's request, expired
    if nobody answered it (`approval.resolved` "expired" / `question.answered` "cancel"), and the
    answer its responder goes on with, as {turn_id: {"kind", "answer"}}."""
    requests = {
        request.turn_id: request
        for request in InboxRequest.objects.select_for_update()
        .filter(turn_id__in=[turn.id for turn in turns])
        .order_by("created_at")
    }  # the latest per turn: a turn has one open request at a time
    events: list[NewEvent] = []
    resolutions: dict[uuid.UUID, dict[str, Any]] = {}
    for turn in turns:
        request = requests.get(turn.id)
        asked = (turn.state or {}).get("asked") or {}
        waits_for_task = asked.get("kind") == "task" or (
            turn.cancel_requested_at is not None and holds_task(turn.state)
        )
        if request is not None and request.status == InboxRequest.Status.OPEN and waits_for_task:
            request.answer = {"action": "cancel"}  # the turn was cancelled while its task asked
            request.status, request.answered_at = InboxRequest.Status.EXPIRED, now
            request.save(update_fields=["status", "answer", "answered_at"])
            events.append(_resolved(request, request.answer, turn, recipients.get(turn.conversation_id, []), now))
        if waits_for_task:  # polled again (or cancelled), whatever its earlier requests were
            resolutions[turn.id] = {"kind": "task", "answer": {}}
            continue
        if request is None:
            continue
        if request.status == InboxRequest.Status.OPEN:
            request.answer = (
                {"decision": "expired"} if request.kind == InboxRequest.Kind.APPROVAL else {"action": "cancel"}
            )
            request.status, request.answered_at = InboxRequest.Status.EXPIRED, now
            request.save(update_fields=["status", "answer", "answered_at"])
            events.append(_resolved(request, request.answer, turn, recipients.get(turn.conversation_id, []), now))
        resolutions[turn.id] = {"kind": request.kind, "request_id": str(request.id), "answer": request.answer}
    return resolutions, events


def open_request_column(turn_column: str) -> str:
    """Whether the turn in `turn_column` has an open request, as a column of another read (a turn's
    write reads it with its locked turns, not in a read of its own)."""
    quote = transaction.get_connection().ops.quote_name
    return (
        f"EXISTS(SELECT 1 FROM {quote(InboxRequest._meta.db_table)} r"
        f" WHERE r.turn_id = {turn_column} AND r.status = '{InboxRequest.Status.OPEN}')"
    )


def turn_requests_close(*, turn: Turn, recipients: list[uuid.UUID], now: datetime) -> list[NewEvent]:
    """A turn that ends while a request is open (a waiting turn cancelled or failed, a turn that
    ends during a mid-call question): the request expires with it (`approval.resolved` "expired",
    `question.answered` "cancel"), so it no longer counts against INBOX_MAX_OPEN_PER_USER."""
    events = []
    for request in InboxRequest.objects.select_for_update().filter(turn=turn, status=InboxRequest.Status.OPEN):
        request.answer = {"decision": "expired"} if request.kind == InboxRequest.Kind.APPROVAL else {"action": "cancel"}
        request.status, request.answered_at = InboxRequest.Status.EXPIRED, now
        request.save(update_fields=["status", "answer", "answered_at"])
        events.append(_resolved(request, request.answer, turn, recipients, now))
    return events


def inbox_answer(*, request: InboxRequest, user: User, answer: dict[str, Any], ip: str | None = None) -> InboxRequest:
    """The requester's answer (validated by the caller against the request's kind and schema).

    Two devices answering at once: the conditional update below is the one decision (on
    PostgreSQL the row lock orders them, on SQLite the IMMEDIATE transaction), so exactly one
    answer wins and the other is a 409. An expired request is a 409 too, even before a worker has
    noticed (its turn will resume with "expired"). The waiting turn becomes due at once, and the
    turn workers are woken (`turns.wakeups.wake`) as the answer commits.
    """
    if request.user_id != user.id:
        raise CortexError(ErrorCode.FORBIDDEN, "Only the participant whose input started the turn can answer.")
    now = timezone.now()
    with transaction.atomic():
        won = InboxRequest.objects.filter(id=request.id, status=InboxRequest.Status.OPEN, expires_at__gt=now).update(
            status=InboxRequest.Status.ANSWERED, answer=answer, answered_at=now
        )
        if not won:
            current = InboxRequest.objects.get(id=request.id)
            state = "expired" if current.status != InboxRequest.Status.ANSWERED else "already answered"
            raise CortexError(ErrorCode.CONFLICT, f"This request is {state}.")
        turn = Turn.objects.select_for_update().get(id=request.turn_id)
        Turn.objects.filter(id=turn.id, status=Turn.Status.WAITING).update(resume_at=now)
        wake()  # a worker resumes the waiting turn, or the running one awaiting this answer reads it
        request.refresh_from_db()
        recipients = conversation_recipient_ids(conversation_ids={turn.conversation_id}).get(turn.conversation_id, [])
        live = events_append(events=[_resolved(request, answer, turn, recipients, now)])
        given = {"decision": answer["decision"]} if "decision" in answer else {"action": answer.get("action")}
        audit.record(
            user,
            f"inbox.{request.kind}_answered",
            ip=ip,
            target=str(request.id),
            detail={"turn_id": str(turn.id), "expert": request.data.get("expert", ""), **given},
        )
        transaction.on_commit(lambda: events_publish(live))
    return request


def connect_questions_answer(*, user_id: uuid.UUID, expert_id: uuid.UUID) -> int:
    """The requester connected their account at an `oauth` expert: each of their open `connect`
    questions for it is answered `accept` by itself, through `inbox_answer` (the same code path as
    an answer from a device: `question.answered`, and the waiting turn is due at once)."""
    answered = 0
    open_requests = InboxRequest.objects.select_related("user").filter(
        user_id=user_id, kind=InboxRequest.Kind.QUESTION, status=InboxRequest.Status.OPEN
    )
    for request in open_requests:
        if str((request.data.get("connect") or {}).get("expert_id")) != str(expert_id):
            continue
        try:
            inbox_answer(request=request, user=request.user, answer={"action": "accept"})
        except CortexError:  # answered or expired meanwhile
            continue
        answered += 1
    return answered
