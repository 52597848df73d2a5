"""Writes of assistant turns: creation with the input, the worker's lease, events, the answer.

Every function is one transaction. Events go into the durable per-user log of every participant
(`streaming.services.events_append`) in the same transaction as the turn's state change; their live
copies are returned to the caller, which publishes them only after the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from common.errors import CortexError, ErrorCode
from mcp_services.outbox import delivery
from mcp_services.outbox import services as memory_outbox
from streaming.services import LiveMessage, NewEvent, events_append, events_publish
from turns.events import turn_event
from turns.inbox import services as inbox
from turns.inbox.services import Pause
from turns.models import Turn
from workspaces.models import Conversation, Message
from workspaces.selectors import conversation_recipient_ids
from workspaces.services import CreatedInput, direct_call_parse, message_data

Live = list[tuple[str, LiveMessage]]

# Event types, in the order a turn emits them (CONTRACT.md, "Assistant turns").
STARTED = "assistant.started"
DELTA = "assistant.delta"
TOOL_CALL = "tool.call"
TOOL_RESULT = "tool.result"
COMPLETED = "assistant.completed"
FAILED = "assistant.failed"
CANCELLED = "assistant.cancelled"


def turns_create_for_inputs(*, created: list[CreatedInput]) -> None:
    """The turns of a batch of inputs, inside its transaction (one insert for the batch)."""
    if not created:
        return
    Turn.objects.bulk_create(
        [
            Turn(
                id=entry.turn_id,
                conversation_id=entry.message.conversation_id,  # type: ignore[misc]  # set: only conversations have turns
                input_message=entry.message,
                user_id=entry.message.sender_id,
                kind=Turn.Kind.DIRECT if direct_call_parse(entry.message.content) else entry.responder,
                created_at=entry.message.created_at,
            )
            for entry in created
        ]
    )


def _event(turn: Turn | TurnRow, type_: str, data: dict[str, Any], recipients: list[uuid.UUID]) -> NewEvent:
    return turn_event(turn, type_, data, recipients)


def _recipients(conversation_ids: set[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    # Read at each write: a participant removed mid-turn gets none of its later events.
    return conversation_recipient_ids(conversation_ids=conversation_ids)


def turn_cancel(*, turn: Turn) -> Turn:
    """Ask a turn to stop (the caller checked access). A queued turn is cancelled at once; a running
    one is flagged, and its worker ends it with `assistant.cancelled` as soon as it sees the flag.
    A finished turn is a conflict."""
    with transaction.atomic():
        locked = Turn.objects.select_for_update().get(pk=turn.pk)
        if locked.finished:
            raise CortexError(ErrorCode.CONFLICT, f"This turn has already finished ({locked.status}).")
        now = timezone.now()
        live: Live = []
        if locked.status in (Turn.Status.QUEUED, Turn.Status.WAITING):  # no worker holds it: at once
            # A waiting turn's open request expires with it (`approval.resolved` "expired" first).
            recipients = _recipients({locked.conversation_id}).get(locked.conversation_id, [])
            closed = inbox.turn_requests_close(turn=locked, recipients=recipients, now=now)
            locked.status = Turn.Status.CANCELLED
            locked.cancel_requested_at = locked.finished_at = now
            locked.save(update_fields=["status", "cancel_requested_at", "finished_at"])
            live = events_append(events=[*closed, _event(locked, CANCELLED, {}, recipients)])
        elif locked.cancel_requested_at is None:
            locked.cancel_requested_at = now
            locked.save(update_fields=["cancel_requested_at"])
        transaction.on_commit(lambda: events_publish(live))
    return locked


# --- the worker's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnRow:
    """What a worker needs of a turn it runs (plain data: it crosses into the event loop)."""

    id: uuid.UUID
    kind: str
    conversation_id: uuid.UUID
    workspace_id: uuid.UUID
    user_id: uuid.UUID
    input_id: uuid.UUID
    content: str
    deadline: Any  # datetime
    # A turn resumed after waiting in the inbox: its responder's saved state and the answer.
    state: dict[str, Any] | None = None
    resolution: dict[str, Any] | None = None


def _open() -> Q:
    return Q(status__in=[Turn.Status.QUEUED, Turn.Status.RUNNING, Turn.Status.WAITING])


def _leasable(now: Any) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def _due(now: Any) -> Any:
    """Open turns no live lease holds that are the oldest open turn of their conversation, and
    whose user has fewer than TURN_MAX_RUNNING_PER_USER turns running (`user_running`, annotated).
    A waiting turn is due once its request is answered or expired (`resume_at`, `turns.inbox`)."""
    earlier_open = Turn.objects.filter(_open(), conversation_id=OuterRef("conversation_id")).filter(
        Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__lt=OuterRef("id"))
    )
    running = (
        Turn.objects.filter(status=Turn.Status.RUNNING, user_id=OuterRef("user_id"), lease_expires_at__gte=now)
        .order_by()
        .values("user_id")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        Turn.objects.filter(_open())
        .filter(_leasable(now))
        .exclude(status=Turn.Status.WAITING, resume_at__gt=now)
        .exclude(Exists(earlier_open))
        .annotate(user_running=Coalesce(Subquery(running, output_field=IntegerField()), 0))
        .filter(user_running__lt=settings.CORTEX["TURN_MAX_RUNNING_PER_USER"])
    )


def turns_due_exist() -> bool:
    """A read before `turns_claim`: while nothing is due (idle, or every conversation busy with its
    running turn) the worker's polls take no write lock."""
    return _due(timezone.now()).exists()


def turns_claim(*, owner: str, limit: int) -> tuple[list[TurnRow], Live]:
    """Lease up to `limit` turns to `owner` and start them (`assistant.started`), the oldest first:
    in each conversation only its oldest open turn, so turns run one at a time, in input order.

    A running turn whose lease expired was abandoned by a worker that died: it is ended here as
    failed (its partial deltas are in the log; a rerun would repeat them), which frees its
    conversation for the next turn. PostgreSQL: `FOR UPDATE SKIP LOCKED` keeps concurrent workers
    apart; SQLite: the IMMEDIATE transaction does.
    """
    now = timezone.now()
    with transaction.atomic():
        due = list(_due(now).select_for_update(skip_locked=True, of=("self",)).order_by("created_at", "id")[:limit])
        if not due:
            return [], []
        recipients = _recipients({turn.conversation_id for turn in due})
        events: list[NewEvent] = []
        started: list[Turn] = []
        resumed: list[Turn] = []  # waiting turns going on (no second `assistant.started`)
        cap = settings.CORTEX["TURN_MAX_RUNNING_PER_USER"]
        starting: dict[uuid.UUID, int] = {}  # per user, in this claim
        for turn in due:
            members = recipients.get(turn.conversation_id, [])
            if turn.status == Turn.Status.RUNNING:
                turn.status, turn.finished_at, turn.lease_owner, turn.lease_expires_at = (
                    Turn.Status.FAILED,
                    now,
                    "",
                    None,
                )
                turn.error = "The worker running this turn stopped (its lease expired)."
                turn.save(update_fields=["status", "finished_at", "lease_owner", "lease_expires_at", "error"])
                error = {"code": ErrorCode.INTERNAL_ERROR, "message": turn.error}
                events.append(_event(turn, FAILED, {"error": error}, members))
                continue
            if turn.user_running + starting.get(turn.user_id, 0) >= cap:
                continue  # the user's other turns fill their share: this one waits (queued)
            starting[turn.user_id] = starting.get(turn.user_id, 0) + 1
            started.append(turn)
            if turn.status == Turn.Status.WAITING:
                resumed.append(turn)
            else:
                events.append(_event(turn, STARTED, {"input_id": str(turn.input_message_id)}, members))
        resolutions, resolved = inbox.turns_resume(turns=resumed, recipients=recipients, now=now)
        events.extend(resolved)
        lease = now + timedelta(seconds=settings.CORTEX["TURN_LEASE_SECONDS"])
        deadline = now + timedelta(seconds=settings.CORTEX["TURN_TIME_LIMIT_SECONDS"])
        for turn in started:
            if turn.status == Turn.Status.WAITING:  # the time limit it had left when it paused
                turn.deadline, turn.resume_at = now + timedelta(seconds=turn.time_left or 0), None
            else:
                turn.started_at, turn.deadline = now, deadline
            turn.status, turn.lease_owner, turn.lease_expires_at = Turn.Status.RUNNING, owner, lease
            turn.attempts += 1
        Turn.objects.bulk_update(
            started, ["status", "lease_owner", "lease_expires_at", "attempts", "started_at", "deadline", "resume_at"]
        )
        live = events_append(events=events)
        inputs = dict(
            Message.objects.filter(id__in=[turn.input_message_id for turn in started]).values_list("id", "content")
        )
        workspaces = dict(
            Conversation.objects.filter(id__in={turn.conversation_id for turn in started}).values_list(
                "id", "workspace_id"
            )
        )
    rows = [
        TurnRow(
            id=turn.id,
            kind=turn.kind,
            conversation_id=turn.conversation_id,
            workspace_id=workspaces[turn.conversation_id],
            user_id=turn.user_id,
            input_id=turn.input_message_id,
            content=inputs[turn.input_message_id],
            deadline=turn.deadline,
            state=turn.state if turn.id in resolutions else None,
            resolution=resolutions.get(turn.id),
        )
        for turn in started
    ]
    return rows, live


@dataclass
class TurnWrite:
    """One turn's part of a worker's write: events, and maybe its end."""

    turn_id: uuid.UUID
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: Literal["completed", "failed", "cancelled"] | None = None
    content: str = ""  # the answer, with "completed"
    error: str = ""  # with "failed": the message, and its code
    error_code: str = ErrorCode.INTERNAL_ERROR
    pause: Pause | None = None  # the turn waits in the inbox (instead of `finish`)
    ask: tuple[dict[str, Any], Any] | None = None  # a question asked mid-call: (its fields, expires_at)


@dataclass(frozen=True)
class TurnState:
    lost: bool  # the turn is no longer this worker's (its lease expired and it was ended elsewhere)
    cancel_requested: bool


def turns_write(*, owner: str, writes: list[TurnWrite]) -> tuple[dict[uuid.UUID, TurnState], Live]:
    """Apply a batch of writes from one worker in one transaction (group commit: the worker's turns
    share one lock and one commit per flush): append their events, store completed answers, end
    finished turns, renew the leases of the others. A turn no longer leased to `owner` is left alone."""
    now = timezone.now()
    ids = {write.turn_id for write in writes}
    with transaction.atomic():
        turns = {turn.id: turn for turn in Turn.objects.select_for_update().filter(id__in=ids)}
        recipients = _recipients({turn.conversation_id for turn in turns.values()})
        states: dict[uuid.UUID, TurnState] = {}
        events: list[NewEvent] = []
        answers: list[Message] = []
        finished: list[Turn] = []
        for write in writes:
            turn = turns.get(write.turn_id)
            if turn is None or turn.status != Turn.Status.RUNNING or turn.lease_owner != owner:
                states[write.turn_id] = TurnState(lost=True, cancel_requested=False)
                continue
            states[write.turn_id] = TurnState(lost=False, cancel_requested=turn.cancel_requested_at is not None)
            members = recipients.get(turn.conversation_id, [])
            events.extend(_event(turn, type_, data, members) for type_, data in write.events)
            if write.ask is not None:
                events.extend(
                    inbox.question_open(
                        turn=turn, data=write.ask[0], expires_at=write.ask[1], recipients=members, now=now
                    )
                )
            if write.pause is not None and turn.cancel_requested_at is None:
                events.extend(inbox.turn_pause(turn=turn, pause=write.pause, recipients=members, now=now))
                continue
            if write.pause is not None:  # cancelled before it could ask: it ends instead
                write.finish = "cancelled"
            if write.finish is None:
                continue
            turn.lease_owner, turn.lease_expires_at, turn.finished_at = "", None, now
            if write.finish == "completed":
                answer = Message(
                    conversation_id=turn.conversation_id,
                    sender_id=turn.user_id,
                    author=Message.Author.ASSISTANT,
                    content=write.content,
                    metadata={"turn_id": str(turn.id)},
                    created_at=now,
                )
                answers.append(answer)
                turn.status, turn.result_message = Turn.Status.COMPLETED, answer
                events.append(
                    _event(turn, COMPLETED, {"message_id": str(answer.id), "content": write.content}, members)
                )
            elif write.finish == "failed":
                turn.status, turn.error = Turn.Status.FAILED, write.error[:2000]
                error = {"code": str(write.error_code), "message": turn.error}
                events.append(_event(turn, FAILED, {"error": error}, members))
            else:
                turn.status = Turn.Status.CANCELLED
                events.append(_event(turn, CANCELLED, {}, members))
            finished.append(turn)
        if answers:
            Message.objects.bulk_create(answers)
            # The answer reaches the memory of the user whose input started the turn, through the
            # outbox like an input (but not as an `input` event: its event is assistant.completed).
            memory_outbox.outbox_stores_enqueue(
                stores=[
                    (answer.sender_id, answer.id, {**message_data(answer), "author": Message.Author.ASSISTANT})
                    for answer in answers
                ]
            )
            transaction.on_commit(delivery.kick)
        if finished:
            Turn.objects.bulk_update(
                finished, ["status", "lease_owner", "lease_expires_at", "finished_at", "result_message", "error"]
            )
        renew = [turn.id for turn in turns.values() if turn.status == Turn.Status.RUNNING and turn.lease_owner == owner]
        if renew:
            lease = now + timedelta(seconds=settings.CORTEX["TURN_LEASE_SECONDS"])
            Turn.objects.filter(id__in=renew).update(lease_expires_at=lease)
        live = events_append(events=events)
    return states, live


def turns_cancel_requested(*, owner: str, turn_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of this worker's running turns a participant asked to cancel (a read, no lock)."""
    if not turn_ids:
        return set()
    return set(
        Turn.objects.filter(id__in=turn_ids, lease_owner=owner, cancel_requested_at__isnull=False).values_list(
            "id", flat=True
        )
    )
