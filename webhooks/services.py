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
from django.db.models import Case, DateTimeField, Exists, F, OuterRef, Q, Value, When, Window
from django.db.models.functions import RowNumber
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
    per active webhook of its recipient, and those webhooks marked due (if nothing was pending).
    Three statements whatever the numbers, in SQL of our own: on the input's path, the ORM's own
    work (models, compiling) cost more than the database's (`bench.schedules_webhooks --append-cost`)."""
    connection = transaction.get_connection()
    recipients = {entry.recipient_id for entry in entries}
    prep = _Prep(connection)
    hooks: dict[uuid.UUID, list[tuple[Any, list[str]]]] = {}
    with connection.cursor() as cursor:
        owners = [prep.uuid(owner_id) for owner_id in recipients]
        cursor.execute(
            f"SELECT id, owner_id, events FROM {prep.webhooks} WHERE active AND owner_id IN ({prep.marks(owners)})",
            owners,
        )
        by_value = {prep.uuid(owner_id): owner_id for owner_id in recipients}
        for webhook_id, owner_value, events in cursor.fetchall():
            wanted = json.loads(events) if isinstance(events, str) else events
            hooks.setdefault(by_value.get(owner_value, owner_value), []).append((webhook_id, wanted))
    if len(hooks) < len(recipients):  # counted, but deactivated since (by the worker): correct the count
        subscriptions_set(user_ids=recipients - hooks.keys(), count=0)
    if not hooks:
        return 0
    now = prep.when(timezone.now())
    rows: list[tuple[Any, ...]] = []
    due: set[Any] = set()
    for entry in entries:
        body = None
        for webhook_id, wanted in hooks.get(entry.recipient_id, ()):
            if "*" in wanted or entry.type in wanted:
                body = body or _body(entry)
                rows.append((prep.uuid(uuid.uuid4()), webhook_id, entry.seq, entry.type[:64], body, now, now))
                due.add(webhook_id)
    if not rows:
        return 0
    columns = "id, webhook_id, event_seq, type, payload, next_attempt_at, created_at, status, attempts, last_error"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, 'pending', 0, '')"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {prep.deliveries} ({columns}) VALUES {values}", [v for row in chunk for v in row]
            )
        # After the insert (on PostgreSQL it holds a key-share lock on each webhook, so a worker's
        # `attempts_record` either saw these rows or commits after this reads): only where nothing
        # was pending (a pending head keeps its own due time, maybe a backoff).
        marked = list(due)
        cursor.execute(
            f"UPDATE {prep.webhooks} SET next_attempt_at = %s WHERE next_attempt_at IS NULL"
            f" AND id IN ({prep.marks(marked)})",
            [now, *marked],
        )
    return len(rows)


class _Prep:
    """Values and names for the SQL of `deliveries_create`, as the ORM would write them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._uuid = Webhook._meta.pk
        self._when = Delivery._meta.get_field("created_at")
        self.webhooks = connection.ops.quote_name(Webhook._meta.db_table)
        self.deliveries = connection.ops.quote_name(Delivery._meta.db_table)

    def uuid(self, value: uuid.UUID) -> Any:
        return self._uuid.get_db_prep_value(value, self.connection)

    def when(self, value: datetime) -> Any:
        return self._when.get_db_prep_value(value, self.connection)

    @staticmethod
    def marks(values: list[Any]) -> str:
        return ", ".join(["%s"] * len(values))


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


def webhooks_claim(*, owner: str, limit: int, batch: int = 1, now: datetime | None = None) -> list[Claimed]:
    """Lease up to `limit` due webhooks (their head delivery due, not leased or the lease expired:
    a worker that died mid-delivery loses nothing, its webhook is sent again after the lease), and
    return up to `batch` of each one's oldest pending deliveries, in log order (the worker sends
    them one after another and stops at the first failure). Three statements for all of them."""
    now = now or timezone.now()
    with transaction.atomic(savepoint=False):
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
        ids = [webhook.id for webhook in webhooks]
        Webhook.objects.filter(id__in=ids).update(lease_owner=owner, lease_until=now + lease_duration(batch))
        # Each one's first `batch` pending deliveries (on the partial index of pending ones).
        ranked = (
            Delivery.objects.filter(webhook_id__in=ids, status=Delivery.Status.PENDING)
            .annotate(rank=Window(RowNumber(), partition_by=[F("webhook_id")], order_by=F("event_seq").asc()))
            .filter(rank__lte=batch)
            .only("id", "webhook_id", "event_seq", "payload", "attempts")
            .order_by("webhook_id", "event_seq")
        )
        heads: dict[uuid.UUID, list[Delivery]] = {}
        for delivery in ranked:
            heads.setdefault(delivery.webhook_id, []).append(delivery)
        idle = [webhook_id for webhook_id in ids if webhook_id not in heads]
        if idle:  # nothing pending after all (retried by hand and delivered meanwhile)
            Webhook.objects.filter(id__in=idle).update(next_attempt_at=None, lease_owner="", lease_until=None)
        return [
            Claimed(
                webhook_id=webhook.id,
                url=webhook.url,
                secret=webhook.secret,
                delivery_id=head.id,
                event_seq=head.event_seq,
                payload=head.payload,
                attempts=head.attempts,
            )
            for webhook in webhooks
            for head in heads.get(webhook.id, ())
        ]


def lease_duration(batch: int) -> timedelta:
    """A lease covers a batch: the worker starts no attempt of it after WEBHOOK_TIMEOUT_SECONDS,
    and each attempt takes at most that long (plus the rate limit's spacing between them)."""
    spacing = (batch - 1) / settings.WEBHOOK_MAX_PER_SECOND
    extra = settings.WEBHOOK_LEASE_EXTRA_SECONDS + (settings.WEBHOOK_TIMEOUT_SECONDS if batch > 1 else 0)
    return timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + extra + spacing)


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
    """Record attempts (one transaction for all: a few statements for the successes, whatever
    their number; failures one by one), move each webhook on to its next pending delivery (or its
    backoff) and give its lease back. An attempt whose lease was lost (another
    worker took the webhook over) is still recorded; the delivery may go out twice, never zero times."""
    now = now or timezone.now()
    retry_for = timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS)
    disable_after = timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
    spacing = timedelta(seconds=1 / settings.WEBHOOK_MAX_PER_SECOND)
    with transaction.atomic(savepoint=False):
        webhook_ids = sorted({attempt.webhook_id for attempt in attempts})
        if transaction.get_connection().vendor == "postgresql":
            # Locked (FOR UPDATE, in one order) before anything is read: an append that is adding a
            # delivery to one of them holds a key-share lock on it until it commits, so the pending
            # check below sees that delivery (or the append, after us, marks the webhook due itself).
            list(Webhook.objects.select_for_update().filter(id__in=webhook_ids).order_by("id").values_list("id"))
        delivered = [attempt for attempt in attempts if attempt.delivered]
        failed = [attempt for attempt in attempts if not attempt.delivered]
        by_code: dict[int | None, list[uuid.UUID]] = {}
        for attempt in delivered:
            by_code.setdefault(attempt.status_code, []).append(attempt.delivery_id)
        for code, delivery_ids in by_code.items():  # one UPDATE per status code (200, 204...)
            Delivery.objects.filter(id__in=delivery_ids, status=Delivery.Status.PENDING).update(
                status=Delivery.Status.DELIVERED,
                attempts=F("attempts") + 1,
                last_status_code=code,
                last_error="",
                finished_at=now,
            )
        succeeded = {attempt.webhook_id for attempt in delivered} - {attempt.webhook_id for attempt in failed}
        if succeeded:  # one UPDATE: next due (the rate limit's spacing) if more is pending, lease given back
            pending = Exists(Delivery.objects.filter(webhook_id=OuterRef("pk"), status=Delivery.Status.PENDING))
            mine = Q(lease_owner=owner)
            Webhook.objects.filter(id__in=succeeded).update(
                last_attempt_at=now,
                updated_at=now,
                failing_since=None,
                next_attempt_at=Case(
                    When(pending, then=Value(now + spacing)), default=None, output_field=DateTimeField()
                ),
                lease_owner=Case(When(mine, then=Value("")), default=F("lease_owner")),
                lease_until=Case(When(mine, then=None), default=F("lease_until"), output_field=DateTimeField()),
            )
        if mixed := {attempt.webhook_id for attempt in failed} & {attempt.webhook_id for attempt in delivered}:
            Webhook.objects.filter(id__in=mixed).update(failing_since=None)  # a success came before the failure
        for attempt in failed:  # rare: one at a time (at most one per webhook: its batch stopped there)
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
                if now - delivery.created_at >= retry_for:
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
            if webhook.failing_since is None:
                webhook.failing_since = now
                fields.append("failing_since")
            elif now - webhook.failing_since >= disable_after:
                webhook.active = False  # the owner's cursor still counts it: see `_subscriptions_count`
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
def worker_round(*, owner: str, attempts: list[Attempt], limit: int, batch: int) -> list[Claimed]:
    """A delivery worker's round in one write transaction: record the attempts that finished, then
    lease what is due (`attempts_record`, `webhooks_claim`). On SQLite every write transaction takes
    the database's only write lock, which the inputs' group commit waits for: one per round, not two."""
    if attempts:
        attempts_record(owner=owner, attempts=attempts)
    return webhooks_claim(owner=owner, limit=limit, batch=batch) if limit > 0 else []


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
