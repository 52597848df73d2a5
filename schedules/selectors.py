"""Reads of schedules, and their one access check: a schedule is its owner's alone."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from schedules.models import Schedule
from workspaces.selectors import iso


def schedule_get_for_user(*, user: User, schedule_id: object) -> Schedule:
    """The caller's own schedule; another person's is the same 404 as a missing one."""
    try:
        pk = uuid.UUID(str(schedule_id))
    except ValueError:
        raise Http404 from None
    schedule = Schedule.objects.filter(id=pk, owner=user).select_related("owner").first()
    if schedule is None:
        raise Http404
    return schedule


def schedule_list(*, user: User) -> QuerySet[Schedule]:
    return Schedule.objects.filter(owner=user).order_by("created_at", "id")


def schedule_data(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": str(schedule.id),
        "conversation_id": str(schedule.conversation_id),
        "content": schedule.content,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "active": schedule.active,
        "next_run_at": iso(schedule.next_run_at) if schedule.next_run_at else None,
        "last_run_at": iso(schedule.last_run_at) if schedule.last_run_at else None,
        "last_input_id": str(schedule.last_input_id) if schedule.last_input_id else None,
        "paused_reason": schedule.paused_reason or None,
        "created_at": iso(schedule.created_at),
    }
