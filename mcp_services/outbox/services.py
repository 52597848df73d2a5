"""Writes of the core's memory outbox: enqueue (inside the causing transaction), claim, mark, prune."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from mcp_services.models import OutboxEntry


def outbox_stores_enqueue(
    *, stores: list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]], traces: list[str] | None = None
) -> list[OutboxEntry]:
    """One `store_input` per (user id, message id, item), inside the messages' transaction: the
    entries commit or roll back with them. `traces`: each input's `traceparent` (tracing on)."""
    return OutboxEntry.objects.bulk_create(
        OutboxEntry(
            kind=OutboxEntry.Kind.STORE,
            user_id=user_id,
            message_id=message_id,
            conversation_id=data.get("conversation_id"),
            arguments={"user_id": str(user_id), "input_data": data},
            trace_context=(traces[index] if traces else "")[:64],
        )
        for index, (user_id, message_id, data) in enumerate(stores)
    )


def outbox_conversation_deletes_enqueue(*, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> list[OutboxEntry]:
    """One `delete_memory` per (sender, conversation), inside the deleting transaction.

    Stores not yet picked up by a drainer are dropped: memory would delete them right away. A store
    already claimed (in flight) stays, and the delete waits for it (see `outbox_claim`), so an item
    can never land after the delete that should have removed it.
    """
    if not pairs:
        return []
    conversation_ids = {conversation_id for _, conversation_id in pairs}
    now = timezone.now()
    OutboxEntry.objects.pending().unclaimed(now).filter(
        kind=OutboxEntry.Kind.STORE, conversation_id__in=conversation_ids
    ).delete()
    return OutboxEntry.objects.bulk_create(
        OutboxEntry(
            kind=OutboxEntry.Kind.DELETE,
            user_id=user_id,
            conversation_id=conversation_id,
            arguments={"user_id": str(user_id), "conversation_id": str(conversation_id)},
        )
        for user_id, conversation_id in sorted(pairs, key=str)
    )


def outbox_user_purge_enqueue(*, user_id: uuid.UUID) -> OutboxEntry:
    """`delete_memory(everything=True)` for a deleted user, after any of their stores in flight."""
    now = timezone.now()
    OutboxEntry.objects.pending().unclaimed(now).filter(kind=OutboxEntry.Kind.STORE, user_id=user_id).delete()
    return OutboxEntry.objects.create(
        kind=OutboxEntry.Kind.DELETE, user_id=user_id, arguments={"user_id": str(user_id), "everything": True}
    )


def outbox_forget_purged_users(*, user_ids: list[uuid.UUID]) -> int:
    """A deleted user's memory is purged: their outbox rows (the purge itself included, which
    still names them) go now rather than at `OUTBOX_RETENTION_HOURS`, so nothing of the account is
    left. Only rows no drainer holds: a store still in flight is pruned later as delivered."""
    if not user_ids:
        return 0
    deleted, _ = (
        OutboxEntry.objects.filter(user_id__in=user_ids)
        .filter(Q(delivered_at__isnull=False) | Q(failed_at__isnull=False) | Q(claimed_until__isnull=True))
        .delete()
    )
    return deleted


def outbox_claim(*, limit: int, ignore_schedule: bool = False) -> list[OutboxEntry]:
    """Lease up to `limit` due entries, oldest first, to this drainer.

    PostgreSQL: `FOR UPDATE SKIP LOCKED` lets concurrent drainers take disjoint batches. SQLite:
    the transaction is IMMEDIATE (settings), so claims are serialized by the write lock. A lease
    that expires (a drainer died mid-send) makes the entry due again; the idempotent tools make
    the resulting second delivery harmless.

    The write transaction takes the ids and sets the lease; the rows are read after it (leased to
    this drainer: nobody else takes them meanwhile). On SQLite the write lock is then held for two
    short statements, not for building the batch's objects (25 ms for 500, while every input waited).
    """
    ids = _claim_ids(limit=limit, ignore_schedule=ignore_schedule)
    if not ids:
        return []
    return list(OutboxEntry.objects.filter(id__in=ids).order_by("id"))


@transaction.atomic
def _claim_ids(*, limit: int, ignore_schedule: bool) -> list[int]:
    now = timezone.now()
    earlier_store = OutboxEntry.objects.pending().filter(
        kind=OutboxEntry.Kind.STORE,
        user_id=OuterRef("user_id"),
        conversation_id=OuterRef("conversation_id"),
        id__lt=OuterRef("id"),
    )
    due = OutboxEntry.objects.pending().unclaimed(now)
    if not ignore_schedule:
        due = due.filter(next_attempt_at__lte=now)
    any_earlier_store = OutboxEntry.objects.pending().filter(
        kind=OutboxEntry.Kind.STORE, user_id=OuterRef("user_id"), id__lt=OuterRef("id")
    )
    due = due.exclude(Q(kind=OutboxEntry.Kind.DELETE) & Exists(earlier_store))
    # A user's purge (no conversation) waits for every earlier store of that user.
    due = due.exclude(Q(kind=OutboxEntry.Kind.DELETE, conversation_id__isnull=True) & Exists(any_earlier_store))
    ids = list(
        due.select_for_update(skip_locked=True, of=("self",)).order_by("id").values_list("id", flat=True)[:limit]
    )
    if ids:
        lease = now + timedelta(seconds=settings.CORTEX["OUTBOX_LEASE_SECONDS"])
        OutboxEntry.objects.filter(id__in=ids).update(claimed_until=lease)
    return ids


def outbox_mark_delivered(*, entry_ids: list[int]) -> None:
    if entry_ids:
        OutboxEntry.objects.filter(id__in=entry_ids).update(
            attempts=F("attempts") + 1, delivered_at=timezone.now(), claimed_until=None, last_error=""
        )


def outbox_backoff(*, attempts: int) -> timedelta:
    """Exponential backoff with jitter (half to full delay), capped."""
    base = settings.CORTEX["OUTBOX_BACKOFF_BASE_SECONDS"]
    cap = settings.CORTEX["OUTBOX_BACKOFF_MAX_SECONDS"]
    delay = min(cap, base * 2 ** min(max(attempts - 1, 0), 30))
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))


def outbox_mark_retry(*, entry: OutboxEntry, error: str) -> None:
    attempts = entry.attempts + 1
    OutboxEntry.objects.filter(id=entry.id).update(
        attempts=attempts,
        next_attempt_at=timezone.now() + outbox_backoff(attempts=attempts),
        claimed_until=None,
        last_error=error[:2000],
    )


def outbox_mark_failed(*, entry: OutboxEntry, error: str) -> None:
    now = timezone.now()
    OutboxEntry.objects.filter(id=entry.id).update(
        attempts=entry.attempts + 1, failed_at=now, claimed_until=None, last_error=error[:2000]
    )


def outbox_prune(*, older_than: timedelta) -> int:
    deleted, _ = OutboxEntry.objects.filter(delivered_at__lt=timezone.now() - older_than).delete()
    return deleted
