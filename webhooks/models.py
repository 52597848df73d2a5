"""Webhooks (one more client of a person's own event log) and their deliveries (the outbox).

A delivery row is written in the transaction that appends its event (`streaming.signals`), so an
event that commits is delivered and one that rolls back never is. A webhook's deliveries go out in
log order, one at a time (`event_seq`, the event's id in its owner's log); `next_attempt_at` on the
webhook is when its oldest pending delivery is due (NULL: nothing pending), which is all the
delivery worker's claim reads (an index), however many deliveries wait.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Webhook(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)  # event types, or ["*"]
    description = models.CharField(max_length=500, blank=True, default="")
    # The signing key as `whsec_<base64>` (Standard Webhooks): shown once, never in the admin or logs.
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    # When its current run of failed attempts began (NULL after a success): deactivated after
    # WEBHOOK_DISABLE_AFTER_DAYS of nothing but failures.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "created_at"], name="webhook_owner_created")]

    def __str__(self) -> str:
        return f"{self.url} ({self.owner_id})"

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_seq = models.PositiveBigIntegerField()  # the event's id in the owner's log (`webhook-id`)
    type = models.CharField(max_length=64)
    # The body as sent, `{"type", "timestamp", "data"}`: kept here, since the log prunes its events.
    payload = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["webhook", "event_seq"], name="delivery_webhook_event")]
        indexes = [
            models.Index(fields=["webhook", "event_seq"], condition=Q(status="pending"), name="delivery_pending_head"),
            models.Index(fields=["finished_at"], name="delivery_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.event_seq} -> {self.webhook_id} ({self.status})"
