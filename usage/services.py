"""Writes of usage: a turn's usage and the running totals, in the transaction that records the
turn's pause or end (`turns.services.turns_write`)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import transaction

from usage import selectors
from usage.models import TurnUsage, UsageTotal, UserBudget
from workspaces.models import Workspace

WARN_AT = 0.8  # `budget.warning` when a budget's use passes this share, once per period


@dataclass
class UsageDelta:
    """What a turn used since it was last recorded (a worker's share of it)."""

    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    model_requests: int = 0
    model_ms: int = 0

    def model_reported(self, *, model: str, input_tokens: int, output_tokens: int, elapsed_ms: int) -> None:
        self.model = model or self.model
        self.input_tokens += max(int(input_tokens or 0), 0)
        self.output_tokens += max(int(output_tokens or 0), 0)
        self.model_requests += 1
        self.model_ms += max(elapsed_ms, 0)


@dataclass(frozen=True)
class TurnUsageRecord:
    turn_id: uuid.UUID
    user_id: uuid.UUID
    workspace_id: uuid.UUID
    conversation_id: uuid.UUID
    delta: UsageDelta
    started_at: datetime | None  # the turn's start, with its end (`duration_ms`)
    finished: bool


@dataclass(frozen=True)
class BudgetWarning:
    recipient_id: uuid.UUID  # the user; for a workspace budget, its owner
    scope: str
    owner_id: uuid.UUID
    period: date
    tokens: int  # the budget
    used: int


def usage_record(
    *, records: list[TurnUsageRecord], now: datetime
) -> tuple[dict[uuid.UUID, TurnUsage], list[BudgetWarning]]:
    """Add each turn's usage to its row and to the month's totals of its user and workspace (in the
    caller's transaction); the warnings of budgets that passed 80% for the first time this period.
    Totals are updated in one order (scope, owner) whatever the batch holds: no two transactions
    lock two totals in opposite orders."""
    period = selectors.period_of(now)
    totals: dict[tuple[str, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0])
    # The turns' rows (their turns' row locks are held): one read, then one insert and one update
    # for the batch (before: a read and a write per turn).
    rows = {row.turn_id: row for row in TurnUsage.objects.filter(turn_id__in=[record.turn_id for record in records])}
    new: set[uuid.UUID] = set()
    for record in records:
        row = rows.get(record.turn_id)
        first = row is None  # the turn's first record: it counts in the totals' `turns`
        if row is None:
            new.add(record.turn_id)
            row = rows[record.turn_id] = TurnUsage(
                turn_id=record.turn_id,
                user_id=record.user_id,
                workspace_id=record.workspace_id,
                conversation_id=record.conversation_id,
                created_at=record.started_at or now,
            )
        _turn_usage_add(row, record, now)
        tokens = record.delta.input_tokens + record.delta.output_tokens
        for key in ((UsageTotal.Scope.USER, record.user_id), (UsageTotal.Scope.WORKSPACE, record.workspace_id)):
            totals[key][0] += tokens
            totals[key][1] += int(first)
    if new:
        TurnUsage.objects.bulk_create([rows[turn_id] for turn_id in new])
    if len(new) < len(rows):
        TurnUsage.objects.bulk_update([row for turn_id, row in rows.items() if turn_id not in new], list(_ADDED))
    warnings: list[BudgetWarning] = []
    added = [
        (scope, owner_id, tokens, turns) for (scope, owner_id), (tokens, turns) in totals.items() if tokens or turns
    ]
    for total in _totals_add(added, period):
        if total.recipient_id is None or not total.limit or total.warned or total.tokens < WARN_AT * total.limit:
            continue
        if UsageTotal.objects.filter(pk=total.pk, warned=False).update(warned=True):
            warnings.append(
                BudgetWarning(
                    recipient_id=total.recipient_id,
                    scope=total.scope,
                    owner_id=total.owner_id,
                    period=period,
                    tokens=total.limit,
                    used=total.tokens,
                )
            )
    return rows, warnings


_ADDED = ("model", "input_tokens", "output_tokens", "tool_calls", "model_requests", "model_ms", "duration_ms")


def _turn_usage_add(row: TurnUsage, record: TurnUsageRecord, now: datetime) -> None:
    delta = record.delta
    row.model = delta.model or row.model
    row.input_tokens += delta.input_tokens
    row.output_tokens += delta.output_tokens
    row.tool_calls += delta.tool_calls
    row.model_requests += delta.model_requests
    row.model_ms += delta.model_ms
    if record.finished and record.started_at is not None:
        row.duration_ms = max(int((now - record.started_at).total_seconds() * 1000), 0)


@dataclass(frozen=True)
class _Total:
    pk: int
    scope: str
    owner_id: uuid.UUID
    tokens: int
    warned: bool
    recipient_id: uuid.UUID | None  # who is warned: the user, or the workspace's owner
    limit: int  # the budget (0: none)


def _totals_add(added: list[tuple[str, uuid.UUID, int, int]], period: date) -> list[_Total]:
    """Add to the running totals (each created on first use) in one statement: an upsert on
    `usage_total_unique` in (scope, owner) order (no two transactions lock two totals in opposite
    orders), returning each total with its budget (the user's override or USER_MONTHLY_TOKENS; the
    workspace's, and its owner). Before: an UPDATE and a read per total, and a read per budget."""
    if not added:
        return []
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    native = connection.features.has_native_uuid_field
    totals = quote(UsageTotal._meta.db_table)
    budgets = quote(UserBudget._meta.db_table)
    workspaces = quote(Workspace._meta.db_table)
    rows: list[object] = []
    for scope, owner_id, tokens, turns in sorted(added, key=lambda row: (row[0], str(row[1]))):
        rows += [scope, owner_id if native else owner_id.hex, connection.ops.adapt_datefield_value(period)]
        rows += [tokens, turns, False]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {totals} (scope, owner_id, period, tokens, turns, warned) VALUES"
            f" {', '.join(['(%s, %s, %s, %s, %s, %s)'] * len(added))}"
            " ON CONFLICT (scope, owner_id, period) DO UPDATE SET"
            f" tokens = {totals}.tokens + excluded.tokens, turns = {totals}.turns + excluded.turns"
            f" RETURNING id, scope, owner_id, tokens, warned,"
            f" (SELECT b.monthly_tokens FROM {budgets} b WHERE b.user_id = {totals}.owner_id),"
            f" (SELECT w.owner_id FROM {workspaces} w WHERE w.id = {totals}.owner_id),"
            f" (SELECT w.monthly_tokens FROM {workspaces} w WHERE w.id = {totals}.owner_id)",
            rows,
        )
        returned = cursor.fetchall()
    result = []
    for pk, scope, owner_id, tokens, warned, user_tokens, workspace_owner, workspace_tokens in returned:
        owner = owner_id if isinstance(owner_id, uuid.UUID) else uuid.UUID(owner_id)
        if scope == UsageTotal.Scope.USER:
            recipient: uuid.UUID | None = owner
            limit = settings.CORTEX["USER_MONTHLY_TOKENS"] if user_tokens is None else user_tokens
        else:
            recipient = None
            if workspace_owner is not None:
                recipient = workspace_owner if isinstance(workspace_owner, uuid.UUID) else uuid.UUID(workspace_owner)
            limit = workspace_tokens or 0
        result.append(_Total(pk, scope, owner, tokens, bool(warned), recipient, limit))
    return sorted(result, key=lambda total: (total.scope, str(total.owner_id)))
