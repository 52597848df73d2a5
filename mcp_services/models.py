"""Memory items (the memory service's store) and the memory outbox (the core's delivery queue).

Both live in the configured database, which the core and the memory service share by default.
`MemoryItem` has no foreign key to users or conversations on purpose: the memory service may run
against its own database, and it learns about users only through the ids it is given.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

# The one definition of a pending outbox entry: neither delivered nor refused for good. Used by
# `OutboxEntryQuerySet.pending`, the due-entries index, and the metrics' aggregate.
PENDING = models.Q(delivered_at__isnull=True, failed_at__isnull=True)


class MemoryItem(models.Model):
    """One stored input. `data` is the item exactly as the history resource returns it.

    Full-text search runs on `content` through an FTS5 table (SQLite) or a generated `tsvector`
    column with a GIN index (PostgreSQL); both are created by migration 0002 and kept in step by
    the database itself, so every write path (ORM, bulk insert, admin) stays searchable.
    """

    user_id = models.UUIDField()
    # `input_data["id"]`, the idempotency key of `store_input` (a message id for the core's items).
    item_id = models.CharField(max_length=255)
    conversation_id = models.CharField(max_length=255, null=True, blank=True)
    content = models.TextField(blank=True)
    data = models.JSONField()
    timestamp = models.DateTimeField()
    stored_at = models.DateTimeField(default=timezone.now)
    # The content's vector (little-endian float32, unit length) and the model that made it.
    # `embedding_model` null = not embedded yet (`memory_reindex` does it; keyword search finds
    # the item meanwhile); a model with no vector = nothing to embed (empty content). Both are
    # nullable so that adding them is an ALTER TABLE on SQLite: rebuilding the table would drop the
    # full-text triggers of migration 0002. On PostgreSQL with pgvector, migration 0003 adds an
    # `embedding_vec` column with an HNSW index beside them.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    embedding_model = models.CharField(max_length=100, null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_id", "item_id"], name="memory_item_user_item")]
        indexes = [
            models.Index(fields=["user_id", "timestamp", "id"], name="memory_item_user_time"),
            models.Index(fields=["user_id", "conversation_id"], name="memory_item_user_conv"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.item_id}"


class MemoryGeneration(models.Model):
    """How many times a user's memory items changed (inserted, deleted, re-embedded), counted by
    database triggers (migration 0003) so that every write path counts. The memory process trusts
    its in-memory copy of a user's vectors only while this number is the one it was built at."""

    user_id = models.UUIDField(primary_key=True)
    generation = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}@{self.generation}"


class OutboxEntryQuerySet(models.QuerySet["OutboxEntry"]):
    def pending(self) -> OutboxEntryQuerySet:
        """Not yet delivered, nor refused for good: still owed to the memory service."""
        return self.filter(PENDING)

    def unclaimed(self, now: datetime) -> OutboxEntryQuerySet:
        """No drainer holds a lease on these (never claimed, or the lease expired)."""
        return self.filter(models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=now))


class OutboxEntry(models.Model):
    """One call owed to the memory service, written in the same transaction as its cause.

    Delivery is at-least-once (retried with exponential backoff until the service answers) and the
    memory tools are idempotent, so the memory service ends up with each input exactly once.
    """

    class Kind(models.TextChoices):
        STORE = "store", "store_input"
        DELETE = "delete", "delete_memory"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    user_id = models.UUIDField()
    # Set for stores (the message id) and conversation deletes: orders a delete after the stores.
    message_id = models.UUIDField(null=True, blank=True)
    conversation_id = models.UUIDField(null=True, blank=True)
    arguments = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A drainer's lease: another drainer leaves the row alone until it expires.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The input's W3C `traceparent` when tracing is on: its delivery continues the request's trace.
    trace_context = models.CharField(max_length=64, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Set when the service refused the call as invalid: retrying cannot help, an operator must look.
    failed_at = models.DateTimeField(null=True, blank=True)

    objects = OutboxEntryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "outbox entries"
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbox_due",
                condition=PENDING,
            ),
            models.Index(fields=["user_id", "conversation_id"], name="outbox_user_conv"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} for {self.user_id}"

    @property
    def pending(self) -> bool:
        return self.delivered_at is None and self.failed_at is None
