"""The durable per-user event log and the stream tickets.

Each recipient has its own strictly increasing, gap-free sequence (`EventCursor.last_seq`). The
cursor row is locked while a transaction appends to that user's log, so sequence numbers become
visible in the order they were allocated: once a reader sees seq N committed, every seq < N of
that user is committed too. An auto-increment id does not give that guarantee (a smaller id can
commit after a larger one was already delivered), which would make `Last-Event-ID` resume lossy.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class EventCursor(models.Model):
    """Per-user sequence allocator and retention floor."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="event_cursor"
    )
    last_seq = models.PositiveBigIntegerField(default=0)
    # Highest seq removed by retention: a resume from below it has lost events (a reset is due).
    pruned_through = models.PositiveBigIntegerField(default=0)
    # How many subscriptions (a webhook's outbox) want copies of this user's events: read with the
    # seqs, under the cursor's lock, so an append for a user with none costs no query. Never below
    # the truth (it is raised in the subscription's own transaction, with this row locked); it may
    # lag above it (`streaming.services.subscriptions_set`).
    subscriptions = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}@{self.last_seq}"


class EventBody(models.Model):
    """An event's JSON without its per-recipient `id`: stored once, however many recipients it has
    (a 32 KB input to a conversation of 100 is one body and 100 small `Event` rows)."""

    type = models.CharField(max_length=32)
    message = models.ForeignKey("workspaces.Message", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.type} {self.created_at:%Y-%m-%d %H:%M:%S}"


class Event(models.Model):
    """One entry of one recipient's log: `seq` is the event's id on that recipient's streams."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveBigIntegerField()
    body = models.ForeignKey(EventBody, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the body: the `?conversation_id=` filter reads it with the (recipient, seq) index,
    # and deleting a conversation deletes its events.
    conversation = models.ForeignKey(
        "workspaces.Conversation", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recipient", "seq"], name="event_recipient_seq")]

    def __str__(self) -> str:
        return f"{self.recipient_id}#{self.seq}"


class StreamTicket(models.Model):
    """A single-use, short-lived credential for `?ticket=` (browsers cannot set headers).

    Only a hash is stored, and the database (not the per-process cache) holds it, so a ticket
    issued by one core process opens a stream on another.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    ticket_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)
    # When the access token that requested the ticket expires: the stream it opens ends then.
    credential_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"ticket for {self.user_id} until {self.expires_at:%H:%M:%S}"
