"""Reads of webhooks and their deliveries, and the one access check: a webhook is its owner's alone."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from webhooks.models import Delivery, Webhook
from workspaces.selectors import iso


def _uuid(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


def webhook_get_for_user(*, user: User, webhook_id: object) -> Webhook:
    """The caller's own webhook; another person's is the same 404 as a missing one."""
    webhook = Webhook.objects.filter(id=_uuid(webhook_id), owner=user).first()
    if webhook is None:
        raise Http404
    return webhook


def delivery_get(*, webhook: Webhook, delivery_id: object) -> Delivery:
    delivery = Delivery.objects.filter(id=_uuid(delivery_id), webhook=webhook).first()
    if delivery is None:
        raise Http404
    return delivery


def webhook_list(*, user: User) -> QuerySet[Webhook]:
    return Webhook.objects.filter(owner=user).order_by("created_at", "id")


def deliveries_page(*, webhook: Webhook, cursor: int | None, limit: int) -> tuple[list[Delivery], int | None]:
    """Newest first (by the event's place in the log); the cursor is the last `event_seq` seen."""
    rows = Delivery.objects.filter(webhook=webhook)
    if cursor is not None:
        rows = rows.filter(event_seq__lt=cursor)
    page = list(rows.order_by("-event_seq")[: limit + 1])
    following = page[limit - 1].event_seq if len(page) > limit else None
    return page[:limit], following


def webhook_data(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": str(webhook.id),
        "url": webhook.url,
        "events": webhook.events,
        "description": webhook.description,
        "active": webhook.active,
        "disabled_reason": webhook.disabled_reason or None,
        "failing_since": iso(webhook.failing_since) if webhook.failing_since else None,
        "created_at": iso(webhook.created_at),
    }


def delivery_data(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": str(delivery.id),
        "event_id": str(delivery.event_seq),
        "type": delivery.type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error or None,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == Delivery.Status.PENDING else None,
        "created_at": iso(delivery.created_at),
        "finished_at": iso(delivery.finished_at) if delivery.finished_at else None,
    }
