"""Writes of webhooks: registration, secrets, the deliveries (outbox rows) and their outcomes.

The delivery worker (`webhooks.delivery`) claims webhooks, not deliveries: a webhook is leased to
one worker at a time (`lease_owner`, `lease_until`), which sends its oldest pending delivery, then
records the outcome and gives the lease back. So a webhook's events go out in log order, one at a
time, and a slow receiver holds one slot of one worker, never anyone else's deliveries.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from accounts.models import User
from common.errors import CortexError, ErrorCode
from streaming.services import AppendedEvent, cursor_lock, subscriptions_set
from webhooks.models import Delivery, Webhook
from workspaces.selectors import iso

MAX_EVENT_TYPES = 50


def secret_new() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _events_checked(events: Any) -> list[str]:
    if (
        not isinstance(events, list)
        or not 0 < len(events) <= MAX_EVENT_TYPES
        or any(not isinstance(name, str) or not 0 < len(name) <= 64 for name in events)
    ):
        raise CortexError(
            ErrorCode.INVALID_INPUT,
            f'events is a list of 1 to {MAX_EVENT_TYPES} event types, or ["*"].',
            fields={"events": ['A list of event types, or ["*"].']},
        )
    return sorted(set(events))


@transaction.atomic
def webhook_create(*, owner: User, url: str, events: list[str], description: str = "") -> tuple[Webhook, str]:
    """The URL has been checked against the host policy by the caller. Returns the webhook and its
    secret (the only time the secret is shown)."""
    events = _events_checked(events)
    cursor_lock(user_id=owner.pk)  # first (see `_subscriptions_count`); the limit holds under races
    limit = settings.WEBHOOKS_PER_USER
    if Webhook.objects.filter(owner=owner).count() >= limit:
        raise CortexError(
            ErrorCode.CONFLICT, f"You have {limit} webhooks, the most allowed (WEBHOOKS_PER_USER): delete one first."
        )
    secret = secret_new()
    webhook = Webhook.objects.create(owner=owner, url=url, events=events, description=description, secret=secret)
    _subscriptions_count(owner.pk)
    return webhook, secret


def _subscriptions_count(owner_id: uuid.UUID) -> None:
    """The owner's cursor counts their active webhooks, so that an event append reads, with the seqs
    it reserves, whether anyone wants a copy (`streaming.signals`). Every change of `active` runs
    `cursor_lock` first, before any webhook row: an append holds the cursor while it reads the
    webhooks, so it sees a new one either not at all (its events committed first) or committed,
    and the two never wait for each other's rows in opposite orders (PostgreSQL). A webhook that the
    worker deactivates leaves the count high for a while: the next append corrects it
    (`deliveries_create`); too high costs a query, too low would lose deliveries, and never happens."""
    subscriptions_set(user_ids=[owner_id], count=Webhook.objects.filter(owner_id=owner_id, active=True).count())


@transaction.atomic
def webhook_update(*, webhook: Webhook, **changes: Any) -> Webhook:
    """Change `url` (checked by the caller), `events`, `description` or `active`. Reactivating
    clears the failure record; pending deliveries are due again at once."""
    cursor_lock(user_id=webhook.owner_id)
    locked = Webhook.objects.select_for_update().get(pk=webhook.pk)
    fields: list[str] = []
    if "events" in changes:
        locked.events = _events_checked(changes["events"])
        fields.append("events")
    for name in ("url", "description"):
        if name in changes:
            setattr(locked, name, changes[name])
            fields.append(name)
    if "active" in changes and changes["active"] != locked.active:
        locked.active = changes["active"]
        fields.append("active")
        if locked.active:
            locked.failing_since = None
            locked.disabled_reason = ""
            pending = Delivery.objects.filter(webhook=locked, status=Delivery.Status.PENDING).exists()
            locked.next_attempt_at = timezone.now() if pending else None
            fields += ["failing_since", "disabled_reason", "next_attempt_at"]
    if fields:
        locked.save(update_fields=[*fields, "updated_at"])
    if "active" in fields:
        _subscriptions_count(locked.owner_id)
    return locked


@transaction.atomic
def webhook_rotate_secret(*, webhook: Webhook) -> tuple[Webhook, str]:
    secret = secret_new()
    Webhook.objects.filter(pk=webhook.pk).update(secret=secret, updated_at=timezone.now())
    webhook.secret = secret
    return webhook, secret


@transaction.atomic
def webhook_delete(*, webhook: Webhook) -> None:
    cursor_lock(user_id=webhook.owner_id)
    Webhook.objects.filter(pk=webhook.pk).delete()
    _subscriptions_count(webhook.owner_id)


def _body(entry: AppendedEvent) -> str:
    return json.dumps(
        {"type": entry.type, "timestamp": iso(entry.created_at), "data": entry.data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def deliveries_create(*, entries: list[AppendedEvent]) -> int:
    """Inside the events' transaction, which holds the recipients' cursors (`events_appended` is sent
    only for recipients whose cursor counts a subscription): one pending delivery per matching event
    per active webhook of its recipient, in one INSERT, and those webhooks marked due (if nothing
    was pending)."""
    recipients = {entry.recipient_id for entry in entries}
    hooks: dict[uuid.UUID, list[Webhook]] = {}
    for webhook in Webhook.objects.filter(owner_id__in=recipients, active=True).only("id", "owner_id", "events"):
        hooks.setdefault(webhook.owner_id, []).append(webhook)
    if len(hooks) < len(recipients):  # counted, but deactivated since (by the worker): correct the count
        subscriptions_set(user_ids=recipients - hooks.keys(), count=0)
    if not hooks:
        return 0
    now = timezone.now()
    rows: list[Delivery] = []
    bodies: dict[int, str] = {}
    for entry in entries:
        for webhook in hooks.get(entry.recipient_id, ()):
            if webhook.wants(entry.type):
                key = id(entry)
                if key not in bodies:
                    bodies[key] = _body(entry)
                rows.append(
                    Delivery(
                        webhook_id=webhook.id,
                        event_seq=entry.seq,
                        type=entry.type[:64],
                        payload=bodies[key],
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
    if not rows:
        return 0
    Delivery.objects.bulk_create(rows)
    # Only where nothing was pending (a pending head keeps its own due time, maybe a backoff).
    Webhook.objects.filter(id__in={row.webhook_id for row in rows}, next_attempt_at__isnull=True).update(
        next_attempt_at=now
    )
    return len(rows)


@dataclass(frozen=True)
class Claimed:
    """One webhook leased to a worker, with the delivery to send now (its oldest pending one)."""

    webhook_id: uuid.UUID
    url: str
    secret: str
    delivery_id: uuid.UUID
    event_seq: int
    payload: str
    attempts: int


def webhooks_due_exist(*, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return Webhook.objects.filter(next_attempt_at__lte=now, active=True).exists()


def _lease_seconds() -> int:
    return settings.WEBHOOK_TIMEOUT_SECONDS + settings.WEBHOOK_LEASE_EXTRA_SECONDS


def webhooks_claim(*, owner: str, limit: int, now: datetime | None = None) -> list[Claimed]:
    """Lease up to `limit` due webhooks (their head delivery due, not leased or the lease expired:
    a worker that died mid-delivery loses nothing, its webhook is sent again after the lease)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = (
            Webhook.objects.filter(next_attempt_at__lte=now, active=True)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .order_by("next_attempt_at")
        )
        if transaction.get_connection().vendor == "postgresql":
            due = due.select_for_update(skip_locked=True)
        webhooks = list(due.only("id", "url", "secret")[:limit])
        if not webhooks:
            return []
        Webhook.objects.filter(id__in=[w.id for w in webhooks]).update(
            lease_owner=owner, lease_until=now + timedelta(seconds=_lease_seconds())
        )
        # Each one's head: its oldest pending delivery (two queries for the batch, on the partial index).
        firsts = (
            Delivery.objects.filter(webhook_id__in=[w.id for w in webhooks], status=Delivery.Status.PENDING)
            .values("webhook_id")
            .annotate(first=Min("event_seq"))
            .order_by()
        )
        wanted = Q()
        for row in firsts:
            wanted |= Q(webhook_id=row["webhook_id"], event_seq=row["first"])
        heads = {
            head.webhook_id: head
            for head in (
                Delivery.objects.filter(wanted).only("id", "webhook_id", "event_seq", "payload", "attempts")
                if wanted
                else []
            )
        }
        claimed: list[Claimed] = []
        idle = [webhook.id for webhook in webhooks if webhook.id not in heads]
        if idle:  # nothing pending after all (retried by hand and delivered meanwhile)
            Webhook.objects.filter(id__in=idle).update(next_attempt_at=None, lease_owner="", lease_until=None)
        for webhook in webhooks:
            head = heads.get(webhook.id)
            if head is not None:
                claimed.append(
                    Claimed(
                        webhook_id=webhook.id,
                        url=webhook.url,
                        secret=webhook.secret,
                        delivery_id=head.id,
                        event_seq=head.event_seq,
                        payload=head.payload,
                        attempts=head.attempts,
                    )
                )
        return claimed


def backoff_seconds(attempts: int) -> float:
    """The wait before the next attempt after `attempts` failed ones: exponential, capped, with
    +-20 % jitter (receivers that failed together do not all come back at once)."""
    base = settings.WEBHOOK_BACKOFF_BASE_MS / 1000 * 2 ** max(attempts - 1, 0)
    return min(base, settings.WEBHOOK_BACKOFF_MAX_SECONDS) * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: `status_code` (None: no answer) and, unless 2xx, why."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    status_code: int | None
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def attempts_record(*, owner: str, attempts: list[Attempt], now: datetime | None = None) -> None:
    """Record attempts (one transaction for all), move each webhook on to its next pending
    delivery (or its backoff) and give its lease back. An attempt whose lease was lost (another
    worker took the webhook over) is still recorded; the delivery may go out twice, never zero times."""
    now = now or timezone.now()
    retry_for = timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS)
    disable_after = timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
    spacing = timedelta(seconds=1 / settings.WEBHOOK_MAX_PER_SECOND)
    with transaction.atomic():
        for attempt in attempts:
            webhook = Webhook.objects.select_for_update().filter(id=attempt.webhook_id).first()
            delivery = Delivery.objects.filter(id=attempt.delivery_id, status=Delivery.Status.PENDING).first()
            if webhook is None:
                continue
            fields = ["last_attempt_at", "next_attempt_at", "updated_at"]
            webhook.last_attempt_at = now
            retry_at: datetime | None = None
            if delivery is not None:
                delivery.attempts += 1
                delivery.last_status_code = attempt.status_code
                delivery.last_error = attempt.error[:500]
                if attempt.delivered:
                    delivery.status = Delivery.Status.DELIVERED
                    delivery.finished_at = now
                elif now - delivery.created_at >= retry_for:
                    delivery.status = Delivery.Status.FAILED
                    delivery.finished_at = now
                else:
                    retry_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))
                    delivery.next_attempt_at = retry_at
                delivery.save(
                    update_fields=[
                        "attempts",
                        "last_status_code",
                        "last_error",
                        "status",
                        "finished_at",
                        "next_attempt_at",
                    ]
                )
            if attempt.delivered:
                if webhook.failing_since is not None:
                    webhook.failing_since = None
                    fields.append("failing_since")
            else:
                if webhook.failing_since is None:
                    webhook.failing_since = now
                    fields.append("failing_since")
                elif now - webhook.failing_since >= disable_after:
                    webhook.active = False
                    webhook.disabled_reason = (
                        f"Every attempt failed for {settings.WEBHOOK_DISABLE_AFTER_DAYS} days: {attempt.error}"
                    )[:200]
                    fields += ["active", "disabled_reason"]
            if retry_at is not None:
                webhook.next_attempt_at = retry_at
            elif Delivery.objects.filter(webhook_id=webhook.id, status=Delivery.Status.PENDING).exists():
                webhook.next_attempt_at = now + spacing  # the per-webhook rate limit
            else:
                webhook.next_attempt_at = None
            if webhook.lease_owner == owner:
                webhook.lease_owner, webhook.lease_until = "", None
                fields += ["lease_owner", "lease_until"]
            webhook.save(update_fields=fields)


@transaction.atomic
def delivery_retry(*, delivery: Delivery) -> Delivery:
    """`POST .../retry`: a delivered or failed delivery is sent again (pending, due now, in its place
    in log order); a pending one is due now."""
    now = timezone.now()
    Webhook.objects.select_for_update().filter(pk=delivery.webhook_id).first()
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.PENDING, next_attempt_at=now, finished_at=None, created_at=now
    )
    Webhook.objects.filter(pk=delivery.webhook_id).update(next_attempt_at=now)
    delivery.refresh_from_db()
    return delivery


def deliveries_prune(*, older_than: timedelta) -> int:
    """Finished deliveries past retention (housekeeping); pending ones stay until they finish."""
    deleted, _ = Delivery.objects.filter(finished_at__lt=timezone.now() - older_than).delete()
    return deleted
