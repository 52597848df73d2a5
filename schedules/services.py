"""Writes of schedules: create, change, delete, run now, and the claim of due runs.

A run is an input of the schedule's owner (`workspaces.services.messages_create`, the path of
`POST /input`) with `metadata.schedule_id`, so its turn, events, memory outbox row and approvals
are those of any input. The claim advances `next_run_at` in the transaction that writes the input:
a due time is run exactly once, however many processes claim at once (PostgreSQL: the due rows are
locked with SKIP LOCKED, and a row another process has just advanced no longer matches; SQLite:
the IMMEDIATE transaction holds the database's only write lock).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from accounts.models import User
from common.errors import CortexError, ErrorCode
from common.wakeups import wake
from schedules import cron
from schedules.models import Schedule
from streaming.services import LiveMessage, NewEvent, events_append
from workspaces.models import Conversation
from workspaces.selectors import conversation_recipient_ids, iso
from workspaces.services import InputRequest, InputResponse, messages_create

logger = logging.getLogger(__name__)

PAUSED = "schedule.paused"
SKIPPED = "schedule.skipped"
CLAIM_BATCH = 100

Live = list[tuple[str, LiveMessage]]


def _invalid(exc: cron.CronInvalid) -> CortexError:
    return CortexError(ErrorCode.INVALID_INPUT, str(exc), fields={exc.field: [str(exc)]})


def _first_run(expression: str, timezone_name: str, now: datetime) -> datetime:
    try:
        return cron.checked(expression, timezone_name, now=now, min_interval=settings.SCHEDULE_MIN_INTERVAL_SECONDS)
    except cron.CronInvalid as exc:
        raise _invalid(exc) from None


def _content_checked(content: str) -> None:
    limit = settings.CORTEX["MAX_CONTENT_CHARS"]
    if not content.strip() or len(content) > limit:
        raise CortexError(
            ErrorCode.INVALID_INPUT,
            f"content must be 1 to {limit} characters.",
            fields={"content": [f"1 to {limit} characters."]},
        )


@transaction.atomic
def schedule_create(
    *, owner: User, conversation: Conversation, content: str, cron_expression: str, timezone_name: str, active: bool
) -> Schedule:
    """The caller has checked that `owner` takes part in `conversation`."""
    _content_checked(content)
    now = timezone.now()
    next_run_at = _first_run(cron_expression, timezone_name, now)
    # The owner's row serializes their creations (PostgreSQL), so the limit holds under races.
    User.objects.select_for_update().filter(pk=owner.pk).first()
    limit = settings.SCHEDULES_PER_USER
    if Schedule.objects.filter(owner=owner).count() >= limit:
        raise CortexError(
            ErrorCode.CONFLICT,
            f"You have {limit} schedules, the most allowed (SCHEDULES_PER_USER): delete one first.",
        )
    schedule = Schedule.objects.create(
        owner=owner,
        conversation=conversation,
        content=content,
        cron=" ".join(cron_expression.split()),
        timezone=timezone_name,
        active=active,
        next_run_at=next_run_at if active else None,
    )
    if active:
        wake()  # the turn workers look again at the earliest due time (`schedules_next_due`)
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, conversation: Conversation | None = None, **changes: Any) -> Schedule:
    """Change `content`, `cron`, `timezone`, `active` or the conversation (checked by the caller).
    The next run is computed again from now when the timing changes or the schedule is resumed."""
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    fields: list[str] = []
    if "content" in changes:
        _content_checked(changes["content"])
        locked.content = changes["content"]
        fields.append("content")
    if conversation is not None:
        locked.conversation = conversation
        fields.append("conversation")
    timing = False
    if "cron" in changes:
        locked.cron = " ".join(changes["cron"].split())
        fields.append("cron")
        timing = True
    if "timezone" in changes:
        locked.timezone = changes["timezone"]
        fields.append("timezone")
        timing = True
    if "active" in changes and changes["active"] != locked.active:
        locked.active = changes["active"]
        fields.append("active")
        timing = True
    if timing:
        first = _first_run(locked.cron, locked.timezone, timezone.now())
        locked.next_run_at = first if locked.active else None
        locked.paused_reason = ""
        fields += ["next_run_at", "paused_reason"]
    if fields:
        locked.save(update_fields=[*fields, "updated_at"])
        wake()  # a new due time (or a resumed schedule): the workers look again at the earliest one
    return locked


@transaction.atomic
def schedule_delete(*, schedule: Schedule) -> None:
    Schedule.objects.filter(pk=schedule.pk).delete()


def _request(schedule: Schedule, *, due_at: datetime | None) -> InputRequest:
    return InputRequest(
        sender=schedule.owner,
        content=schedule.content,
        conversation_id=schedule.conversation_id,
        metadata={"schedule_id": str(schedule.id)},
        # One input per due time even if two claims ever raced past the lock: the key is unique per user.
        idempotency_key=f"schedule:{schedule.id}:{int(due_at.timestamp())}" if due_at is not None else None,
    )


def schedule_run_now(*, schedule: Schedule) -> InputResponse:
    """`POST /schedules/<id>/run`: once, now (the caller has checked the owner still takes part)."""
    with transaction.atomic():
        outcome = messages_create(requests=[_request(schedule, due_at=None)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        response, _ = outcome
        Schedule.objects.filter(pk=schedule.pk).update(
            last_run_at=timezone.now(), last_input_id=uuid.UUID(response["data"]["id"])
        )
    return response


def schedules_due_exist(*, now: datetime | None = None) -> bool:
    """A plain read on the `next_run_at` index: the claim's write transaction runs only when needed."""
    return Schedule.objects.filter(next_run_at__lte=now or timezone.now()).exists()


def schedules_next_due() -> datetime | None:
    """The earliest due time of any schedule (one read on the `next_run_at` index): the turn worker
    sleeps until then. A write that makes an earlier one (create, change, resume) calls `wake()`."""
    return (
        Schedule.objects.filter(next_run_at__isnull=False)
        .order_by("next_run_at")
        .values_list("next_run_at", flat=True)
        .first()
    )


def _event(schedule: Schedule, kind: str, data: dict[str, Any], now: datetime) -> NewEvent:
    # The owner's own log (no conversation: an event without one goes to its sender only), and
    # only while they are active: inactive users are never recipients.
    return NewEvent(
        type=kind,
        user_id=schedule.owner_id,
        conversation_id=None,
        data={"schedule_id": str(schedule.id), "conversation_id": str(schedule.conversation_id), **data},
        recipient_ids=[schedule.owner_id] if schedule.owner.is_active else [],
        created_at=now,
    )


def _pause(schedule: Schedule, reason: str, now: datetime) -> NewEvent:
    schedule.active = False
    schedule.next_run_at = None
    schedule.paused_reason = reason
    schedule.save(update_fields=["active", "next_run_at", "paused_reason", "updated_at"])
    return _event(schedule, PAUSED, {"reason": reason}, now)


def _plan(schedule: Schedule, members: dict[uuid.UUID, list[uuid.UUID]], now: datetime) -> list[NewEvent]:
    """One claimed schedule: advance it, and set `schedule.run_at` to the due time to run now (the
    latest one within the catch-up window), or pause it if its owner may no longer post there."""
    schedule.run_at = None  # type: ignore[attr-defined]
    due = schedule.next_run_at
    assert due is not None
    if not schedule.owner.is_active:
        return [_pause(schedule, "The owner's account is not active.", now)]
    if schedule.owner_id not in members.get(schedule.conversation_id, []):
        return [_pause(schedule, "The owner no longer takes part in the conversation.", now)]
    events: list[NewEvent] = []
    try:
        following = cron.next_run(schedule.cron, schedule.timezone, now)
        catchup = timedelta(seconds=settings.SCHEDULE_CATCHUP_SECONDS)
        run_at: datetime | None = due
        if now - due > catchup:
            # Down for longer than the window: the old due time is skipped; the latest one inside
            # the window (if any) still runs, once.
            events.append(_event(schedule, SKIPPED, {"due_at": iso(due), "reason": "missed"}, now))
            recent = cron.next_run(schedule.cron, schedule.timezone, now - catchup)
            run_at = recent if recent <= now else None
    except cron.CronInvalid as exc:  # a timezone that left the system's database, say
        return [_pause(schedule, f"Its timing is no longer valid: {exc}", now)]
    schedule.next_run_at = following
    schedule.run_at = run_at  # type: ignore[attr-defined]
    return events


def _refusal(outcome: Exception) -> str:
    if isinstance(outcome, CortexError):
        return outcome.message
    if isinstance(outcome, ValidationError):
        return "; ".join(outcome.messages)
    return str(outcome) or type(outcome).__name__


def schedules_run_due(*, now: datetime | None = None, limit: int = CLAIM_BATCH) -> Live:
    """Claim and run up to `limit` due schedules in one transaction, their inputs written as one
    batch (one `messages_create`, the group commit of `POST /input`). Returns the live copies of the
    schedules' own events (`schedule.paused`, `schedule.skipped`), for the caller to publish after
    the commit; the inputs' events are published by the input path's own on-commit hook."""
    now = now or timezone.now()
    with transaction.atomic():
        due = Schedule.objects.filter(next_run_at__lte=now).select_related("owner").order_by("next_run_at")
        if transaction.get_connection().vendor == "postgresql":
            due = due.select_for_update(skip_locked=True, of=("self",))
        claimed = list(due[:limit])
        if not claimed:
            return []
        members = conversation_recipient_ids(conversation_ids={schedule.conversation_id for schedule in claimed})
        events: list[NewEvent] = []
        for schedule in claimed:
            events += _plan(schedule, members, now)
        running = [schedule for schedule in claimed if getattr(schedule, "run_at", None) is not None]
        outcomes = messages_create(requests=[_request(s, due_at=s.run_at) for s in running]) if running else []  # type: ignore[attr-defined]
        for schedule, outcome in zip(running, outcomes, strict=True):
            if isinstance(outcome, Http404):  # the membership changed under us: as above
                events.append(_pause(schedule, "The owner no longer takes part in the conversation.", now))
            elif isinstance(outcome, Exception):  # turn_policy reject with a turn open, say: this run is lost
                data = {"due_at": iso(schedule.run_at), "reason": _refusal(outcome)[:500]}  # type: ignore[attr-defined]
                events.append(_event(schedule, SKIPPED, data, now))
            else:
                schedule.last_run_at = now
                schedule.last_input_id = uuid.UUID(outcome[0]["data"]["id"])
        for schedule in claimed:
            if schedule.active:
                schedule.save(update_fields=["next_run_at", "last_run_at", "last_input_id", "updated_at"])
        return events_append(events=events) if events else []
