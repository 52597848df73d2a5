"""Reads of usage: the budget check a turn makes before calling the model, and `GET /usage`."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate

from usage.models import TurnUsage, UsageTotal, UserBudget
from workspaces.models import Workspace

GROUPS = ("day", "workspace", "conversation", "model")


def period_of(now: datetime) -> date:
    """The budget period (a calendar month, UTC) that `now` falls in, as its first day."""
    return now.astimezone(UTC).date().replace(day=1)


def user_limit(*, user_id: uuid.UUID) -> int:
    """The user's monthly tokens: their override in the admin, else USER_MONTHLY_TOKENS (0: none)."""
    override = UserBudget.objects.filter(user_id=user_id).values_list("monthly_tokens", flat=True).first()
    return settings.CORTEX["USER_MONTHLY_TOKENS"] if override is None else override


def workspace_budgets(*, workspace_ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[uuid.UUID, int]]:
    """(owner id, monthly tokens) of each workspace."""
    rows = Workspace.objects.filter(id__in=workspace_ids).values_list("id", "owner_id", "monthly_tokens")
    return {workspace_id: (owner_id, tokens) for workspace_id, owner_id, tokens in rows}


def budget_refusal(*, user_id: uuid.UUID, workspace_id: uuid.UUID, now: datetime) -> str | None:
    """Why a turn may not call the model (a budget of its user or workspace is used up), or None.
    The totals are one indexed read (`usage_total_unique`); the budgets two primary-key reads."""
    user_budget = user_limit(user_id=user_id)
    _, workspace_budget = workspace_budgets(workspace_ids={workspace_id}).get(workspace_id, (None, 0))
    if not user_budget and not workspace_budget:
        return None
    used = dict(
        UsageTotal.objects.filter(
            Q(scope=UsageTotal.Scope.USER, owner_id=user_id)
            | Q(scope=UsageTotal.Scope.WORKSPACE, owner_id=workspace_id),
            period=period_of(now),
        ).values_list("scope", "tokens")
    )
    if user_budget and used.get(UsageTotal.Scope.USER, 0) >= user_budget:
        return f"Your monthly token budget ({user_budget}) is used up."
    if workspace_budget and used.get(UsageTotal.Scope.WORKSPACE, 0) >= workspace_budget:
        return f"This workspace's monthly token budget ({workspace_budget}) is used up."
    return None


def user_budget(*, user_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    used = (
        UsageTotal.objects.filter(scope=UsageTotal.Scope.USER, owner_id=user_id, period=period_of(now))
        .values_list("tokens", flat=True)
        .first()
    )
    return {"period": "month", "tokens": user_limit(user_id=user_id), "used": used or 0}


def usage_summary(*, user_id: uuid.UUID, start: datetime, end: datetime, group_by: str) -> list[dict[str, Any]]:
    """The caller's turns from `start` (inclusive) to `end` (exclusive), grouped; keys ascending."""
    key: Any = {
        "day": TruncDate("created_at", tzinfo=UTC),
        "workspace": F("workspace_id"),
        "conversation": F("conversation_id"),
        "model": F("model"),
    }[group_by]
    rows = (
        TurnUsage.objects.filter(user_id=user_id, created_at__gte=start, created_at__lt=end)
        .annotate(group=key)
        .values("group")
        .annotate(
            turns=Count("turn_id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            tool_calls=Sum("tool_calls"),
        )
        .order_by("group")
    )
    return [
        {
            "key": str(row["group"]) if row["group"] is not None else "",
            "turns": row["turns"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "tool_calls": row["tool_calls"] or 0,
        }
        for row in rows
    ]
