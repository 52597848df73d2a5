"""Writes of assistant turns: creation with the input, the worker's lease, events, the answer.

Every function is one transaction. Events go into the durable per-user log of every participant
(`streaming.services.events_append`) in the same transaction as the turn's state change; their live
copies are returned to the caller, which publishes them only after the commit.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import CortexError, ErrorCode
from common.wakeups import wake
from mcp_services.outbox import delivery
from mcp_services.outbox import services as memory_outbox
from streaming.services import LiveMessage, NewEvent, events_append, events_publish
from turns.events import turn_event
from turns.inbox import services as inbox
from turns.inbox.models import InboxRequest
from turns.inbox.services import Pause
from turns.models import Turn
from turns.selectors import speaker_names
from usage import services as usage
from usage.services import BudgetWarning, TurnUsageRecord, UsageDelta
from workspaces.models import Conversation, Message
from workspaces.selectors import (
    conversation_recipient_ids,
    conversation_recipients_column,
    conversation_recipients_of,
    conversation_settings,
)
from workspaces.services import CreatedInput, message_data

Live = list[tuple[str, LiveMessage]]

# Event types, in the order a turn emits them (CONTRACT.md, "Assistant turns").
STARTED = "assistant.started"
DELTA = "assistant.delta"
TOOL_CALL = "tool.call"
TOOL_RESULT = "tool.result"
TOOL_PROGRESS = "tool.progress"  # the expert's progress on a running call, at most 4 a second per call
TOOL_TASK = "tool.task"  # a call run as an MCP task: its status changed
COMPLETED = "assistant.completed"
FAILED = "assistant.failed"
CANCELLED = "assistant.cancelled"
BUDGET_WARNING = "budget.warning"
INTERRUPTED = "interrupted"  # `assistant.cancelled`'s reason when a newer input interrupted the turn


def turns_create_for_inputs(*, created: list[CreatedInput]) -> None:
    """The turns of a batch of inputs, inside its transaction (one insert for the batch), under
    their conversations' locks (`messages_create` took them, and the open turns' with
    `conversations_open_turns`). In a conversation whose `turn_policy` is interrupt, the newest
    input's turn interrupts every older open one."""
    if not created:
        return
    Turn.objects.bulk_create(
        [
            Turn(
                id=entry.turn_id,
                conversation_id=entry.message.conversation_id,  # type: ignore[misc]  # set: only conversations have turns
                input_message=entry.message,
                user_id=entry.message.sender_id,
                kind=Turn.Kind.DIRECT if entry.direct_call else entry.responder,
                direct_call=entry.direct_call.as_json() if entry.direct_call else None,
                created_at=entry.message.created_at,
                trace_context=entry.trace[:64],
            )
            for entry in created
        ]
    )
    newest: dict[uuid.UUID, uuid.UUID] = {
        entry.message.conversation_id: entry.turn_id  # type: ignore[misc]  # both set for a turn
        for entry in created
        if entry.turn_policy == Conversation.TurnPolicy.INTERRUPT
    }
    live = _interrupt(newest) if newest else []
    _heads_advance({entry.message.conversation_id for entry in created})  # type: ignore[misc]
    transaction.on_commit(lambda: events_publish(live))


def conversations_open_turns(*, conversation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these conversations have an open turn; their open turns are locked (PostgreSQL)
    before the input's events are, in the order every turn write takes its locks."""
    if not conversation_ids:
        return set()
    rows = Turn.objects.select_for_update().filter(_open(), conversation_id__in=conversation_ids)
    return set(rows.values_list("conversation_id", flat=True))


def _interrupt(newest: dict[uuid.UUID, uuid.UUID]) -> Live:
    """Interrupt the open turns older than `newest[conversation]`: a queued or waiting one ends now
    (a waiting one's open request expires with it), a running one is asked to stop (its worker
    ends it); all end `assistant.cancelled`, reason interrupted."""
    now = timezone.now()
    older = Turn.objects.filter(_open(), conversation_id__in=newest.keys()).exclude(id__in=newest.values())
    queued: list[Turn] = []
    waiting: list[Turn] = []
    for turn in older:
        turn.cancel_reason = INTERRUPTED
        if turn.status == Turn.Status.WAITING and inbox.holds_task(turn.state):
            # As `turn_cancel` does: resumed at once to cancel its task at the expert, then ended.
            turn.cancel_requested_at = turn.cancel_requested_at or now
            turn.resume_at = now
            turn.save(update_fields=["cancel_requested_at", "cancel_reason", "resume_at"])
            continue
        if turn.status == Turn.Status.WAITING:
            waiting.append(turn)
        if turn.status in (Turn.Status.QUEUED, Turn.Status.WAITING):
            turn.status, turn.head, turn.state = Turn.Status.CANCELLED, False, None
            turn.cancel_requested_at = turn.finished_at = now
            queued.append(turn)
        elif turn.cancel_requested_at is None:
            turn.cancel_requested_at = now
            wake()  # its worker stops it at its next round
        ended = ["state"] if turn.finished else []  # a running one keeps its state until its worker ends it
        turn.save(update_fields=["status", "head", "cancel_requested_at", "cancel_reason", "finished_at", *ended])
    recipients = _recipients({turn.conversation_id for turn in queued})
    closed = [
        event
        for turn in waiting
        for event in inbox.turn_requests_close(turn=turn, recipients=recipients.get(turn.conversation_id, []), now=now)
    ]
    return events_append(
        events=[
            *closed,
            *(_event(turn, CANCELLED, _cancelled(turn), recipients.get(turn.conversation_id, [])) for turn in queued),
        ]
    )


def _cancelled(turn: Turn) -> dict[str, Any]:
    return {"reason": turn.cancel_reason} if turn.cancel_reason else {}


def _heads_advance(conversation_ids: set[uuid.UUID]) -> None:
    """Mark the oldest open turn of each conversation as its head (after turns opened or ended;
    the caller holds the conversations' locks). One statement whatever the number of conversations
    (before: a read and an UPDATE each); it reads one index entry per conversation
    (`turn_conversation_order`). A new head may be due: the workers are woken once the transaction
    commits."""
    if not conversation_ids:
        return
    sql = _ClaimSql.get()
    t = sql.turns
    places, params = sql.ids_in("c.id", conversation_ids)
    conversations = sql.connection.ops.quote_name(Conversation._meta.db_table)
    if sql.fetch(
        f"UPDATE {t} SET head = {sql.true} WHERE head = {sql.false} AND id IN (SELECT (SELECT o.id FROM {t} o"
        " WHERE o.conversation_id = c.id AND o.status IN ('queued', 'running', 'waiting')"
        f" ORDER BY o.created_at, o.id LIMIT 1) FROM {conversations} c WHERE {places}) RETURNING id",
        params,
    ):
        wake()


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
        conversation_settings(conversation_ids={turn.conversation_id}, lock=True)  # lock order: conversation, turn
        locked = Turn.objects.select_for_update().get(pk=turn.pk)
        if locked.finished:
            raise CortexError(ErrorCode.CONFLICT, f"This turn has already finished ({locked.status}).")
        now = timezone.now()
        live: Live = []
        if locked.status == Turn.Status.WAITING and inbox.holds_task(locked.state):
            # Its call runs at the expert as a task: a worker resumes it at once to cancel the task
            # (`tasks/cancel`), then ends it cancelled. Its open request expires when it resumes.
            locked.cancel_requested_at, locked.resume_at = now, now
            locked.save(update_fields=["cancel_requested_at", "resume_at"])
        elif locked.status in (Turn.Status.QUEUED, Turn.Status.WAITING):  # no worker holds it: at once
            recipients = _recipients({locked.conversation_id}).get(locked.conversation_id, [])
            # A waiting turn's open request expires with it (`approval.resolved` "expired" first).
            closed = inbox.turn_requests_close(turn=locked, recipients=recipients, now=now)
            locked.status, locked.head, locked.state = Turn.Status.CANCELLED, False, None
            locked.cancel_requested_at = locked.finished_at = now
            locked.save(update_fields=["status", "head", "cancel_requested_at", "finished_at", "state"])
            _heads_advance({locked.conversation_id})
            live = events_append(events=[*closed, _event(locked, CANCELLED, _cancelled(locked), recipients)])
        elif locked.cancel_requested_at is None:
            locked.cancel_requested_at = now
            locked.save(update_fields=["cancel_requested_at"])
            wake()  # its worker stops it at its next round
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
    context_scope: str = Conversation.ContextScope.CONVERSATION
    direct_call: dict[str, str] | None = None  # `direct`: the parsed call (`DirectCall.as_json`)
    # A turn resumed after waiting in the inbox: its responder's saved state and the answer.
    state: dict[str, Any] | None = None
    resolution: dict[str, Any] | None = None
    # Cancelled (or interrupted) while it waited for an expert's task: it resumes to cancel the task.
    cancel_requested: bool = False
    trace_context: str = ""  # the input's `traceparent` (tracing on): the turn's span is its child


def _open() -> Q:
    return Q(status__in=[Turn.Status.QUEUED, Turn.Status.RUNNING, Turn.Status.WAITING])


def _running_counts(now: Any, user_ids: set[uuid.UUID] | None = None) -> dict[uuid.UUID, int]:
    """Turns running under live leases, per user (a read of the running turns alone: `turn_running`)."""
    sql = _ClaimSql.get()
    where, params = "", [sql.time(now)]
    if user_ids is not None:
        if not user_ids:
            return {}
        where, ids = sql.ids_in("user_id", user_ids)
        where, params = f" AND {where}", [*params, *ids]
    rows = sql.fetch(
        f"SELECT user_id, COUNT(*) FROM {sql.turns} WHERE status = 'running' AND lease_expires_at >= %s{where}"
        " GROUP BY user_id",
        params,
    )
    return {sql.as_uuid(user_id): count for user_id, count in rows}


class _ClaimSql:
    """The claim's statements written out (issue 29: building them with the ORM was about half of the
    claim's CPU). The literals stay in the text, so SQLite's planner matches the partial indexes
    (`turn_runnable`, `turn_unparked`, `turn_running`, `turn_waiting`) as it did the ORM's queries."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.native_uuid = connection.features.has_native_uuid_field
        self.postgresql = connection.vendor == "postgresql"
        self.true, self.false = ("true", "false") if self.postgresql else ("1", "0")
        self.turns = connection.ops.quote_name(Turn._meta.db_table)
        self.users = connection.ops.quote_name(Turn._meta.get_field("user").related_model._meta.db_table)
        self.messages = connection.ops.quote_name(Message._meta.db_table)
        self.skip_locked = (
            f" FOR UPDATE OF {self.turns} SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
        )

    @classmethod
    def get(cls) -> _ClaimSql:
        return cls(transaction.get_connection())

    def time(self, value: Any) -> Any:
        return self.connection.ops.adapt_datetimefield_value(value)

    def ids_in(self, column: str, ids: Any) -> tuple[str, list[Any]]:
        values = [value if self.native_uuid else value.hex for value in ids]
        return f"{column} IN ({', '.join(['%s'] * len(values))})", values

    @staticmethod
    def as_uuid(value: Any) -> uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)

    def fetch(self, statement: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()

    def run(self, statement: str, params: list[Any]) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(statement, params)


def _capped(running: dict[uuid.UUID, int]) -> list[uuid.UUID]:
    """Users with TURN_MAX_RUNNING_PER_USER turns running: their queued turns wait."""
    return [user_id for user_id, count in running.items() if count >= settings.CORTEX["TURN_MAX_RUNNING_PER_USER"]]


def _park(user_ids: list[uuid.UUID]) -> None:
    """Inside the claim: the queued heads of users at their cap leave `turn_runnable` (a read of
    their unparked heads alone, `turn_unparked`: those that appeared since they were last parked)."""
    if user_ids:
        sql = _ClaimSql.get()
        users, params = sql.ids_in("user_id", user_ids)
        sql.run(
            f"UPDATE {sql.turns} SET parked = {sql.true} WHERE head = {sql.true} AND status = 'queued'"
            f" AND parked = {sql.false} AND {users}",
            params,
        )


def _unpark(user_ids: set[uuid.UUID], now: Any) -> None:
    """After turns of these users stopped running (ended, paused, abandoned): as many of each one's
    oldest parked heads as their share now allows are runnable again (`turn_parked`), and the
    workers are woken (their other queued heads and answered waiting turns may be due now too).
    PostgreSQL: one statement (the counts, and the UPDATE as a CTE); SQLite: the counts, then an
    UPDATE per user with a free share (before: the counts, then a read and an UPDATE per user)."""
    if not user_ids:
        return
    cap = settings.CORTEX["TURN_MAX_RUNNING_PER_USER"]
    sql = _ClaimSql.get()
    t = sql.turns
    parked = f"head = {sql.true} AND status = 'queued' AND parked = {sql.true}"
    if sql.postgresql:
        users, ids = sql.ids_in("u.id", user_ids)
        free = sql.fetch(
            f"WITH free AS (SELECT u.id AS user_id, %s - (SELECT COUNT(*) FROM {t} r WHERE r.status = 'running'"
            f" AND r.lease_expires_at >= %s AND r.user_id = u.id) AS n FROM {sql.users} u WHERE {users}),"
            f" unparked AS (UPDATE {t} SET parked = false WHERE id IN (SELECT p.id FROM free CROSS JOIN LATERAL"
            f" (SELECT id FROM {t} WHERE {parked} AND user_id = free.user_id ORDER BY created_at, id"
            " LIMIT GREATEST(free.n, 0)) p) RETURNING id)"
            " SELECT user_id FROM free WHERE n > 0",
            [cap, sql.time(now), *ids],
        )
        if free:
            wake()
        return
    running = _running_counts(now, user_ids)
    for user_id in user_ids:
        free = cap - running.get(user_id, 0)
        if free <= 0:
            continue
        wake()
        sql.run(
            f"UPDATE {t} SET parked = {sql.false} WHERE id IN (SELECT id FROM {t} WHERE {parked}"
            " AND user_id = %s ORDER BY created_at, id LIMIT %s)",
            [user_id if sql.native_uuid else user_id.hex, free],
        )


def turns_unpark_stranded() -> int:
    """The worker's safety net (every TURN_LEASE_SECONDS / 3): users with parked heads but no turn
    running (their share freed by a path that did not unpark, or a raised cap) get them back. A read
    of the parked heads alone; returns how many users it found."""
    now = timezone.now()
    parked = Turn.objects.filter(head=True, status=Turn.Status.QUEUED, parked=True)
    if not parked.exists():
        return 0
    with transaction.atomic():
        parked_users = set(parked.order_by().values_list("user_id", flat=True).distinct())
        stranded = parked_users - set(_running_counts(now, parked_users))
        _unpark(stranded, now)
    return len(stranded)


def turns_due_exist() -> bool:
    """A read before `turns_claim`: while nothing is due (idle, or every conversation busy with its
    running turn) the worker's polls take no write lock. One statement (it runs at every wake-up and
    poll, before the claim): a running turn whose lease expired, a head not parked yet (a capped
    user's counts too: the claim parks it, once), or a waiting turn due again of a user below their
    cap. The literals stay in the text, so SQLite's planner matches the partial indexes."""
    sql = _ClaimSql.get()
    at = sql.time(timezone.now())
    t = sql.turns
    [(due,)] = sql.fetch(
        f"WITH capped AS (SELECT user_id FROM {t} WHERE status = 'running' AND lease_expires_at >= %s"
        " GROUP BY user_id HAVING COUNT(*) >= %s)"
        f" SELECT EXISTS(SELECT 1 FROM {t} WHERE status = 'running' AND lease_expires_at < %s)"
        f" OR EXISTS(SELECT 1 FROM {t} WHERE head = {sql.true} AND status = 'queued' AND parked = {sql.false})"
        f" OR EXISTS(SELECT 1 FROM {t} WHERE status = 'waiting' AND resume_at <= %s"
        " AND user_id NOT IN (SELECT user_id FROM capped))",
        [at, settings.CORTEX["TURN_MAX_RUNNING_PER_USER"], at, at],
    )
    return bool(due)


def _claim_seen(sql: _ClaimSql, at: Any, limit: int, capped: list[uuid.UUID]) -> list[tuple[Any, Any]]:
    """Due: running turns whose lease expired (their worker died), and the heads (the oldest open
    turn of their conversation) of users below their running-turn cap, queued (`turn_runnable`:
    capped users' heads are parked, so the read grows with running turns and open conversations,
    not with the turns queued behind them) or waiting and due again (`turn_waiting`); each kind the
    oldest `limit`. (id, conversation id) each."""
    not_capped, capped_ids = sql.ids_in(f"{sql.turns}.user_id", capped) if capped else ("", [])
    not_capped = f" AND NOT {not_capped}" if capped else ""
    return sql.fetch(
        f"SELECT * FROM (SELECT id, conversation_id FROM {sql.turns} WHERE status = 'running'"
        " AND lease_expires_at < %s ORDER BY created_at, id LIMIT %s) expired"
        f" UNION ALL SELECT * FROM (SELECT id, conversation_id FROM {sql.turns} WHERE head = {sql.true}"
        f" AND status = 'queued' AND parked = {sql.false} ORDER BY created_at, id LIMIT %s) heads"
        f" UNION ALL SELECT * FROM (SELECT id, conversation_id FROM {sql.turns} WHERE status = 'waiting'"
        f" AND resume_at <= %s AND head = {sql.true}{not_capped} ORDER BY resume_at LIMIT %s) resumable",
        [at, limit, limit, at, *capped_ids, limit],
    )


def _claim_first_look(
    sql: _ClaimSql, at: Any, limit: int
) -> tuple[dict[uuid.UUID, int], list[uuid.UUID], list[tuple[Any, Any]]]:
    """PostgreSQL: `_running_counts`, `_park` and `_claim_seen` in one statement (three round trips
    were a third of the claim's statements). The parking UPDATE is a CTE, whose change the rest of
    the statement does not see (one snapshot): the heads' read leaves the capped users out by their
    ids instead, which is the same set (a head that is not parked and not capped). Returns the
    running counts, the capped users and the due (id, conversation id) pairs, as the three did."""
    t = sql.turns
    rows = sql.fetch(
        f"WITH running AS (SELECT user_id, COUNT(*) AS n FROM {t} WHERE status = 'running'"
        " AND lease_expires_at >= %s GROUP BY user_id),"
        " capped AS (SELECT user_id FROM running WHERE n >= %s),"
        f" parked AS (UPDATE {t} SET parked = true WHERE head = true AND status = 'queued' AND parked = false"
        " AND user_id IN (SELECT user_id FROM capped) RETURNING id)"
        " SELECT 0, user_id, NULL::uuid, n FROM running"
        f" UNION ALL (SELECT 1, id, conversation_id, NULL FROM {t} WHERE status = 'running'"
        " AND lease_expires_at < %s ORDER BY created_at, id LIMIT %s)"
        f" UNION ALL (SELECT 1, id, conversation_id, NULL FROM {t} WHERE head = true AND status = 'queued'"
        " AND parked = false AND user_id NOT IN (SELECT user_id FROM capped) ORDER BY created_at, id LIMIT %s)"
        f" UNION ALL (SELECT 1, id, conversation_id, NULL FROM {t} WHERE status = 'waiting' AND resume_at <= %s"
        " AND head = true AND user_id NOT IN (SELECT user_id FROM capped) ORDER BY resume_at LIMIT %s)",
        [at, settings.CORTEX["TURN_MAX_RUNNING_PER_USER"], at, limit, limit, at, limit],
    )
    running = {user_id: count for kind, user_id, _, count in rows if kind == 0}
    seen = [(turn_id, conversation_id) for kind, turn_id, conversation_id, _ in rows if kind == 1]
    return running, _capped(running), seen


def turns_claim(*, owner: str, limit: int) -> tuple[list[TurnRow], Live]:
    """Lease up to `limit` turns to `owner` and start them (`assistant.started`), the oldest first:
    in each conversation only its head, so turns run one at a time, in input order.

    A running turn whose lease expired was abandoned by a worker that died: it is ended here as
    failed (its partial deltas are in the log; a rerun would repeat them), which frees its
    conversation for the next turn. A queued turn of a user who is no longer active ends failed
    without running (a waiting one's open request expires with it). A waiting turn whose request
    was answered or expired resumes, with no second `assistant.started`. PostgreSQL: the
    conversations' locks, then `FOR UPDATE SKIP LOCKED` on the turns, keep concurrent workers and
    inputs apart; SQLite: the IMMEDIATE transaction does.
    """
    now = timezone.now()
    with transaction.atomic():
        sql = _ClaimSql.get()
        at = sql.time(now)
        if sql.postgresql:
            running, capped, seen = _claim_first_look(sql, at, limit)
        else:
            running = _running_counts(now)
            capped = _capped(running)
            _park(capped)  # their heads that appeared since they were last parked; none is read again
            seen = _claim_seen(sql, at, limit, capped)
        not_capped, capped_ids = sql.ids_in(f"{sql.turns}.user_id", capped) if capped else ("", [])
        not_capped = f" AND NOT {not_capped}" if capped else ""
        if not seen:
            return [], []
        conversations = conversation_settings(conversation_ids={sql.as_uuid(cid) for _, cid in seen}, lock=True)
        # Locked, and read again: on PostgreSQL a row changed since it was seen is re-checked
        # (and one another worker holds is skipped).
        seen_ids, seen_params = sql.ids_in(f"{sql.turns}.id", [sql.as_uuid(turn_id) for turn_id, _ in seen])
        t = sql.turns
        # PostgreSQL: each turn's recipients in the same read (`_recipients`' rule), not a read of its
        # own. (SQLite: its own read; as a column of this one the claim took 1.2 ms more CPU.)
        members_column = conversation_recipients_column(f"{t}.conversation_id") if sql.postgresql else "NULL"
        due: list[Any] = list(
            Turn.objects.raw(
                f"SELECT {t}.*, u.is_active AS user_active, m.content AS input_content, {members_column} AS members"
                f" FROM {t} INNER JOIN {sql.users} u ON u.id = {t}.user_id"
                f" INNER JOIN {sql.messages} m ON m.id = {t}.input_message_id"
                f" WHERE {seen_ids} AND (({t}.status = 'running' AND {t}.lease_expires_at < %s)"
                f" OR ({t}.head = {sql.true} AND (({t}.status = 'queued' AND {t}.parked = {sql.false})"
                f" OR ({t}.status = 'waiting' AND {t}.resume_at <= %s)){not_capped}))"
                f" ORDER BY {t}.created_at, {t}.id LIMIT %s{sql.skip_locked}",
                [*seen_params, at, at, *capped_ids, limit],
            )
        )
        if sql.postgresql:
            recipients = {turn.conversation_id: conversation_recipients_of(turn.members) for turn in due}
        else:
            recipients = _recipients({turn.conversation_id for turn in due})
        events: list[NewEvent] = []
        started: list[Any] = []  # the claimed turns (annotated with `user_active`)
        resumed: list[Any] = []  # waiting turns going on (no second `assistant.started`)
        ended: list[Any] = []
        freed: set[uuid.UUID] = set()  # users whose abandoned running turn ends here
        cap = settings.CORTEX["TURN_MAX_RUNNING_PER_USER"]
        starting: dict[uuid.UUID, int] = {}  # per user, in this claim
        for turn in due:
            members = recipients.get(turn.conversation_id, [])
            if turn.status == Turn.Status.RUNNING and turn.user_active and inbox.holds_task(turn.state):
                # Its worker died while it looked at its expert's task (a poll): the next worker
                # looks again. The task goes on at the expert; nothing calls the tool a second time.
                started.append(turn)
                resumed.append(turn)
                continue
            refused = _not_runnable(turn, members)
            if refused is not None:
                if turn.status == Turn.Status.RUNNING:
                    freed.add(turn.user_id)
                code, turn.error = refused
                turn.status, turn.finished_at, turn.lease_owner, turn.lease_expires_at = (
                    Turn.Status.FAILED,
                    now,
                    "",
                    None,
                )
                turn.head, turn.state = False, None  # a finished turn keeps no model request
                ended.append(turn)
                # Its open request expires with it: a waiting turn's, or a question its dead worker's
                # call asked mid-call. Left open, it would count against INBOX_MAX_OPEN_PER_USER for ever.
                events.extend(inbox.turn_requests_close(turn=turn, recipients=members, now=now))
                events.append(_event(turn, FAILED, {"error": {"code": code, "message": turn.error}}, members))
                continue
            if running.get(turn.user_id, 0) + starting.get(turn.user_id, 0) >= cap:
                continue  # the user's other turns fill their share: this one waits (queued)
            starting[turn.user_id] = starting.get(turn.user_id, 0) + 1
            started.append(turn)
            if turn.status == Turn.Status.WAITING:
                resumed.append(turn)
            else:
                events.append(_event(turn, STARTED, {"input_id": str(turn.input_message_id)}, members))
        resolutions: dict[uuid.UUID, dict[str, Any]] = {}
        if resumed:
            resolutions, resolved = inbox.turns_resume(turns=resumed, recipients=recipients, now=now)
            events.extend(resolved)
        if ended:
            Turn.objects.bulk_update(
                ended, ["status", "finished_at", "lease_owner", "lease_expires_at", "error", "head", "state"]
            )
            _heads_advance({turn.conversation_id for turn in ended})
        lease = now + timedelta(seconds=settings.CORTEX["TURN_LEASE_SECONDS"])
        deadline = now + timedelta(seconds=settings.CORTEX["TURN_TIME_LIMIT_SECONDS"])
        fresh = {turn.id for turn in started if turn.status == Turn.Status.QUEUED}
        if fresh:  # the same values for all: one plain UPDATE (bulk_update's CASE costs ~5 ms a row to build)
            ids, ids_params = sql.ids_in("id", fresh)
            sql.run(
                f"UPDATE {sql.turns} SET status = 'running', lease_owner = %s, lease_expires_at = %s,"
                f" attempts = attempts + 1, started_at = %s, deadline = %s WHERE {ids}",
                [owner, sql.time(lease), at, sql.time(deadline), *ids_params],
            )
        for turn in resumed:  # the time limit it had left when it paused (waiting does not count)
            turn.deadline, turn.resume_at = now + timedelta(seconds=turn.time_left or 0), None
            turn.status, turn.lease_owner, turn.lease_expires_at = Turn.Status.RUNNING, owner, lease
            turn.attempts += 1
        if resumed:
            Turn.objects.bulk_update(
                resumed, ["status", "lease_owner", "lease_expires_at", "attempts", "deadline", "resume_at"]
            )
        for turn in started:
            if turn.id in fresh:
                turn.started_at, turn.deadline = now, deadline
        _park([user_id for user_id, count in starting.items() if running.get(user_id, 0) + count >= cap])
        _unpark(freed, now)
        live = events_append(events=events)
    rows = [
        TurnRow(
            id=turn.id,
            kind=turn.kind,
            conversation_id=turn.conversation_id,
            workspace_id=conversations[turn.conversation_id].workspace_id,
            user_id=turn.user_id,
            input_id=turn.input_message_id,
            content=turn.input_content,
            deadline=turn.deadline,
            context_scope=conversations[turn.conversation_id].context_scope,
            direct_call=turn.direct_call,
            state=turn.state if turn.id in resolutions else None,
            resolution=resolutions.get(turn.id),
            cancel_requested=turn.cancel_requested_at is not None,
            trace_context=turn.trace_context,
        )
        for turn in started
    ]
    return rows, live


# The key of a responder's saved state (`Pause.state`) that says its model request holds the
# requester's `personal` context: it may go on only while they are alone in the conversation.
STATE_SCOPE = "scope"


def _not_runnable(turn: Any, members: list[uuid.UUID]) -> tuple[ErrorCode, str] | None:
    """Why a due turn ends here instead of running (its code and message), or None. Checked when a
    queued turn starts and when a waiting one resumes: time has passed since its input was
    accepted, and it acts with its requester's authority for whoever takes part now."""
    if turn.status == Turn.Status.RUNNING:
        return ErrorCode.INTERNAL_ERROR, "The worker running this turn stopped (its lease expired)."
    if not turn.user_active:
        return ErrorCode.PERMISSION_DENIED, "The user who sent this input is no longer active."
    if turn.user_id not in members:
        return ErrorCode.PERMISSION_DENIED, "The user who sent this input no longer takes part in this conversation."
    personal = (turn.state or {}).get(STATE_SCOPE) == Conversation.ContextScope.PERSONAL
    if turn.status == Turn.Status.WAITING and personal and any(user_id != turn.user_id for user_id in members):
        return (
            ErrorCode.PERMISSION_DENIED,
            "Someone joined the conversation while this turn waited: it holds the requester's personal context.",
        )
    return None


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
    # The call whose task the turn followed has its result: the saved state (the task's) is done with,
    # so a worker that dies from now on does not leave a task to poll again.
    state_clear: bool = False
    ask: tuple[dict[str, Any], Any] | None = None  # a question asked mid-call: (its fields, expires_at)
    # With a pause or an end: what the turn used on this worker since it was last recorded.
    usage: UsageDelta | None = None


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
    # A pause may end its turn too (cancelled before it could ask): its conversation is locked as well.
    ending = [write.turn_id for write in writes if write.finish is not None or write.pause is not None]
    lease = now + timedelta(seconds=settings.CORTEX["TURN_LEASE_SECONDS"])
    with transaction.atomic():
        turns = _write_lock(owner, ids, ending, lease)
        # Read at each write: a participant removed mid-turn gets none of its later events.
        recipients = {turn.conversation_id: conversation_recipients_of(turn.members) for turn in turns.values()}
        asking = {turn.id for turn in turns.values() if turn.asking}
        states: dict[uuid.UUID, TurnState] = {}
        events: list[NewEvent] = []
        used, warnings = _usage_record(owner, turns, writes, now)
        events.extend(_budget_warning(warning, now) for warning in warnings)
        answers: list[Message] = []
        finished: list[Turn] = []
        freed: set[uuid.UUID] = set()  # users with a turn that stops running here
        for write in writes:
            turn = turns.get(write.turn_id)
            if turn is None or turn.status != Turn.Status.RUNNING or turn.lease_owner != owner:
                states[write.turn_id] = TurnState(lost=True, cancel_requested=False)
                continue
            states[write.turn_id] = TurnState(lost=False, cancel_requested=turn.cancel_requested_at is not None)
            members = recipients.get(turn.conversation_id, [])
            events.extend(_event(turn, type_, data, members) for type_, data in write.events)
            if write.state_clear:
                Turn.objects.filter(id=turn.id).update(state=None)
                turn.state = None
            if write.ask is not None:
                events.extend(
                    inbox.question_open(
                        turn=turn, data=write.ask[0], expires_at=write.ask[1], recipients=members, now=now
                    )
                )
            if write.pause is not None and turn.cancel_requested_at is not None and inbox.holds_task(write.pause.state):
                # Cancelled as it paused with a task running at the expert: due at once, so that a
                # worker resumes it to send `tasks/cancel` (ending it here would leave the task running).
                write.pause = Pause(kind="task", data={}, state=write.pause.state, resume_in=0.0)
            if write.pause is not None and (turn.cancel_requested_at is None or write.pause.kind == "task"):
                events.extend(inbox.turn_pause(turn=turn, pause=write.pause, recipients=members, now=now))
                freed.add(turn.user_id)
                continue
            if write.pause is not None:  # cancelled before it could ask: it ends instead
                write.finish = "cancelled"
            if write.finish is None:
                continue
            if turn.id in asking:  # a question asked mid-call, whose call ends with the turn
                events.extend(inbox.turn_requests_close(turn=turn, recipients=members, now=now))
            turn.lease_owner, turn.lease_expires_at, turn.finished_at, turn.head = "", None, now, False
            turn.state = None  # a finished turn keeps no model request (other people's words among them)
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
                data = {"message_id": str(answer.id), "content": write.content, "usage": _usage_data(used.get(turn.id))}
                events.append(_event(turn, COMPLETED, data, members))
            elif write.finish == "failed":
                turn.status, turn.error = Turn.Status.FAILED, write.error[:2000]
                error = {"code": str(write.error_code), "message": turn.error}
                events.append(_event(turn, FAILED, {"error": error}, members))
            else:
                turn.status = Turn.Status.CANCELLED
                events.append(_event(turn, CANCELLED, _cancelled(turn), members))
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
            delivery.deliver_after_commit()
        if finished:
            _finish(finished, now)
            _heads_advance({turn.conversation_id for turn in finished})
            freed.update(turn.user_id for turn in finished)
        _unpark(freed, now)  # their users' running shares are free again
        live = events_append(events=events)
    return states, live


def _finish(finished: list[Any], now: Any) -> None:
    """The ended turns' state in one UPDATE written out (`bulk_update`'s CASE expressions were half
    of an ending's CPU): what every ended turn gets (no lease, no head, no saved model request,
    `finished_at`), and per turn its status, answer and error."""
    sql = _ClaimSql.get()
    ids, params = sql.ids_in("id", [turn.id for turn in finished])

    def key(value: Any) -> Any:
        return value if value is None or sql.native_uuid else value.hex

    cases: list[str] = []
    values: list[Any] = []
    for column, cast, value_of in (
        ("status", "", lambda turn: turn.status),
        ("result_message_id", "::uuid" if sql.postgresql else "", lambda turn: key(turn.result_message_id)),
        ("error", "", lambda turn: turn.error),
    ):
        cases.append(f"{column} = (CASE id{' WHEN %s THEN %s' * len(finished)} END){cast}")
        for turn in finished:
            values += [key(turn.id), value_of(turn)]
    sql.run(
        f"UPDATE {sql.turns} SET lease_owner = '', lease_expires_at = NULL, finished_at = %s, head = {sql.false},"
        f" state = NULL, {', '.join(cases)} WHERE {ids}",
        [sql.time(now), *values, *params],
    )


def _write_lock(owner: str, ids: set[uuid.UUID], ending: list[uuid.UUID], lease: Any) -> dict[uuid.UUID, Any]:
    """`turns_write`'s locks, and what it reads of its turns: the turns still leased to `owner` and
    running, locked, their leases renewed (those that end or pause here get theirs cleared later in
    the transaction), each with `workspace_place` (its conversation's workspace), `asking` (an open
    inbox request) and `members` (the conversation's recipients, `_recipients`' rule).
    A turn another worker took over (or that ended) is not returned: its write is refused.

    One UPDATE ... RETURNING (before: a locked read, then reads of the recipients, the open requests
    and the workspaces, and the renewal at the end). With turns ending, PostgreSQL first locks their
    conversations (lock order: conversation, then turn; their next turns become heads); on SQLite the
    IMMEDIATE transaction holds the database's write lock, and that lock's read was a no-op."""
    sql = _ClaimSql.get()
    t = sql.turns
    if ending and sql.postgresql:
        conversations = sql.connection.ops.quote_name(Conversation._meta.db_table)
        closing, params = sql.ids_in("o.id", ending)
        sql.run(
            f"SELECT c.id FROM {conversations} c WHERE c.id IN (SELECT o.conversation_id FROM {t} o WHERE {closing})"
            " ORDER BY c.id FOR NO KEY UPDATE OF c",
            params,
        )
    written, params = sql.ids_in("id", ids)
    conversations = sql.connection.ops.quote_name(Conversation._meta.db_table)
    statement = (
        f"UPDATE {t} SET lease_expires_at = %s WHERE {written} AND status = 'running' AND lease_owner = %s"
        f" RETURNING *, (SELECT c.workspace_id FROM {conversations} c WHERE c.id = {t}.conversation_id)"
        f" AS workspace_place, {inbox.open_request_column(f'{t}.id')} AS asking,"
        f" {conversation_recipients_column(f'{t}.conversation_id')} AS members"
    )
    turns: dict[uuid.UUID, Any] = {
        turn.id: turn for turn in Turn.objects.raw(statement, [sql.time(lease), *params, owner])
    }
    for turn in turns.values():
        turn.workspace_place = sql.as_uuid(turn.workspace_place)
    return turns


def _usage_record(
    owner: str, turns: dict[uuid.UUID, Any], writes: list[TurnWrite], now: Any
) -> tuple[dict[uuid.UUID, Any], list[BudgetWarning]]:
    """The usage of the turns this batch pauses or ends (their rows and their month's totals, in
    this transaction), and the budgets that passed 80% with it."""
    recorded = [
        (write, turns[write.turn_id])
        for write in writes
        if (write.finish is not None or write.pause is not None)
        and write.turn_id in turns
        and turns[write.turn_id].status == Turn.Status.RUNNING
        and turns[write.turn_id].lease_owner == owner
    ]
    if not recorded:
        return {}, []
    records = []
    for write, turn in recorded:
        records.append(
            TurnUsageRecord(
                turn_id=turn.id,
                user_id=turn.user_id,
                workspace_id=turn.workspace_place,  # `_write_lock`'s
                conversation_id=turn.conversation_id,
                delta=write.usage or UsageDelta(),
                started_at=turn.started_at,
                finished=write.finish is not None,
            )
        )
    return usage.usage_record(records=records, now=now)


def _usage_data(row: Any) -> dict[str, Any]:
    """`assistant.completed`'s `usage`: the whole turn's, as the model reported it."""
    if row is None:
        return {"model": "", "input_tokens": 0, "output_tokens": 0, "tool_calls": 0}
    return {
        "model": row.model,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "tool_calls": row.tool_calls,
    }


def _budget_warning(warning: BudgetWarning, now: Any) -> NewEvent:
    data: dict[str, Any] = {
        "scope": warning.scope,
        "period": warning.period.strftime("%Y-%m"),
        "tokens": warning.tokens,
        "used": warning.used,
    }
    if warning.scope == "workspace":
        data["workspace_id"] = str(warning.owner_id)
    return NewEvent(
        type=BUDGET_WARNING,
        user_id=warning.recipient_id,
        conversation_id=None,
        data=data,
        recipient_ids=[warning.recipient_id],
        created_at=now,
    )


def turns_cancel_requested(*, owner: str, turn_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of this worker's running turns a participant asked to cancel (a read, no lock)."""
    if not turn_ids:
        return set()
    return set(
        Turn.objects.filter(id__in=turn_ids, lease_owner=owner, cancel_requested_at__isnull=False).values_list(
            "id", flat=True
        )
    )


# --- erasure ---------------------------------------------------------------------------------------

ERASED = "[erased]"
ERASED_NAME = "erased"
SCRUB_MIN_CHARS = 8  # a shorter message is removed where it is attributed, never searched for as text
SCRUB_MESSAGES = 500  # per conversation, the erased user's latest messages searched for as text


def turns_user_forget(*, user_id: uuid.UUID) -> None:
    """Before a user is deleted (`accounts.signals.user_deleting`, in its transaction): their words
    leave the other participants' turns and inbox requests (their own go with them).

    An open turn keeps the model request it waits with (`Turn.state`): there, the messages and
    remembered items attributed to the user (by the name the turn used, `state["speakers"]`) become
    `[erased]` and their name `erased`, and any verbatim copy of their messages elsewhere in it (an
    answer quoting them, the arguments the model built from them) is cut out, as it is in the inbox
    requests of those conversations (so an approval still shows exactly what would be sent). A
    finished turn's state is no longer needed and is dropped."""
    memberships = Conversation.participants.through.objects.filter(user_id=user_id)
    conversation_ids = set(memberships.values_list("conversation_id", flat=True))
    if not conversation_ids:
        return
    Turn.objects.filter(conversation_id__in=conversation_ids, state__isnull=False).filter(
        status__in=Turn.FINISHED
    ).update(state=None)
    turns = list(
        Turn.objects.select_for_update()
        .filter(conversation_id__in=conversation_ids, state__isnull=False)
        .exclude(user_id=user_id)
        .order_by("id")
    )
    requests = list(
        InboxRequest.objects.select_for_update()
        .filter(conversation_id__in=conversation_ids)
        .exclude(user_id=user_id)
        .order_by("id")
    )
    places = {turn.conversation_id for turn in turns} | {request.conversation_id for request in requests}
    words = {conversation_id: _said_by(user_id, conversation_id) for conversation_id in places}
    names = {
        conversation_id: speaker_names(conversation_id=conversation_id, user_ids={user_id}).get(user_id, "")
        for conversation_id in {turn.conversation_id for turn in turns}
    }
    for turn in turns:
        state = _state_scrubbed(turn.state or {}, user_id, names[turn.conversation_id])
        turn.state = _scrubbed(state, words[turn.conversation_id])
    Turn.objects.bulk_update(turns, ["state"])
    for request in requests:
        request.data = _scrubbed(request.data, words[request.conversation_id])
        request.answer = _scrubbed(request.answer, words[request.conversation_id])
    InboxRequest.objects.bulk_update(requests, ["data", "answer"])


def _said_by(user_id: uuid.UUID, conversation_id: uuid.UUID) -> list[str]:
    """The needles for the user's words in a conversation: their latest messages (inputs, and the
    answers to their turns), as text and as they read inside JSON text, longest first."""
    contents = Message.objects.filter(sender_id=user_id, conversation_id=conversation_id).order_by("-created_at")
    needles: set[str] = set()
    for content in contents.values_list("content", flat=True)[:SCRUB_MESSAGES]:
        if len(content) >= SCRUB_MIN_CHARS:
            needles.update((content, json.dumps(content)[1:-1]))
    return sorted(needles, key=len, reverse=True)


def _state_scrubbed(state: dict[str, Any], user_id: uuid.UUID, name_now: str) -> dict[str, Any]:
    """The messages of a saved model request that are attributed to the user, emptied."""
    speakers: dict[str, str] = state.get("speakers") or {}
    theirs = {name for name, speaker in speakers.items() if speaker == str(user_id)}
    if not speakers and name_now:  # saved before turns recorded their speakers: the name as it is now
        theirs = {name_now}
    if not theirs:
        return state
    pattern = re.compile("|".join(rf"\b{re.escape(name)}\b" for name in sorted(theirs, key=len, reverse=True)))
    messages = []
    for message in state.get("messages") or []:
        if message.get("name") in theirs:
            message = {**message, "name": ERASED_NAME, "content": ERASED}
        elif message.get("role") == "system" and isinstance(message.get("content"), str):
            message = {**message, "content": pattern.sub(ERASED_NAME, message["content"])}
        messages.append(message)
    kept = {name: speaker for name, speaker in speakers.items() if name not in theirs}
    return {**state, "messages": messages, **({"speakers": kept} if "speakers" in state else {})}


def _scrubbed(value: Any, needles: list[str]) -> Any:
    """`value` (JSON) with every verbatim copy of the needles replaced by `[erased]`."""
    if not needles:
        return value
    if isinstance(value, str):
        for needle in needles:
            if needle in value:
                value = value.replace(needle, ERASED)
        return value
    if isinstance(value, list):
        return [_scrubbed(item, needles) for item in value]
    if isinstance(value, dict):
        return {key: _scrubbed(item, needles) for key, item in value.items()}
    return value
