"""Writes of usage: a turn's usage and the running totals, in the transaction that records the
turn's pause or end (`turns.services.turns_write`)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from usage import selectors
from usage.models import TurnUsage, UsageTotal

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
    rows: dict[uuid.UUID, TurnUsage] = {}
    totals: dict[tuple[str, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0])
    workspaces: set[uuid.UUID] = set()
    for record in records:
        row, created = _turn_usage_add(record, now)
        rows[record.turn_id] = row
        tokens = record.delta.input_tokens + record.delta.output_tokens
        for key in ((UsageTotal.Scope.USER, record.user_id), (UsageTotal.Scope.WORKSPACE, record.workspace_id)):
            totals[key][0] += tokens
            totals[key][1] += int(created)
        workspaces.add(record.workspace_id)
    warnings: list[BudgetWarning] = []
    owners = selectors.workspace_budgets(workspace_ids=workspaces)
    for (scope, owner_id), (tokens, turns) in sorted(totals.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        if not tokens and not turns:
            continue
        total = _total_add(scope=scope, owner_id=owner_id, period=period, tokens=tokens, turns=turns)
        recipient: uuid.UUID | None = owner_id
        if scope == UsageTotal.Scope.USER:
            limit = selectors.user_limit(user_id=owner_id)
        else:
            recipient, limit = owners.get(owner_id, (None, 0))
        if recipient is None or not limit or total.warned or total.tokens < WARN_AT * limit:
            continue
        if UsageTotal.objects.filter(pk=total.pk, warned=False).update(warned=True):
            warnings.append(
                BudgetWarning(
                    recipient_id=recipient,
                    scope=scope,
                    owner_id=owner_id,
                    period=period,
                    tokens=limit,
                    used=total.tokens,
                )
            )
    return rows, warnings


def _turn_usage_add(record: TurnUsageRecord, now: datetime) -> tuple[TurnUsage, bool]:
    delta = record.delta
    row = TurnUsage.objects.filter(turn_id=record.turn_id).first()  # the turn's row lock is held
    created = row is None
    if row is None:
        row = TurnUsage(
            turn_id=record.turn_id,
            user_id=record.user_id,
            workspace_id=record.workspace_id,
            conversation_id=record.conversation_id,
            created_at=record.started_at or now,
        )
    row.model = delta.model or row.model
    row.input_tokens += delta.input_tokens
    row.output_tokens += delta.output_tokens
    row.tool_calls += delta.tool_calls
    row.model_requests += delta.model_requests
    row.model_ms += delta.model_ms
    if record.finished and record.started_at is not None:
        row.duration_ms = max(int((now - record.started_at).total_seconds() * 1000), 0)
    if created:
        row.save(force_insert=True)
    else:
        row.save(
            update_fields=[
                "model",
                "input_tokens",
                "output_tokens",
                "tool_calls",
                "model_requests",
                "model_ms",
                "duration_ms",
            ]
        )
    return row, created


def _total_add(*, scope: str, owner_id: uuid.UUID, period: date, tokens: int, turns: int) -> UsageTotal:
    """Add to a running total (created on first use; a concurrent creator's row is added to)."""
    rows = UsageTotal.objects.filter(scope=scope, owner_id=owner_id, period=period)
    if not rows.update(tokens=F("tokens") + tokens, turns=F("turns") + turns):
        try:
            with transaction.atomic():
                return UsageTotal.objects.create(
                    scope=scope, owner_id=owner_id, period=period, tokens=tokens, turns=turns
                )
        except IntegrityError:
            rows.update(tokens=F("tokens") + tokens, turns=F("turns") + turns)
    return rows.get()
