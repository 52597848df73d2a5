"""A schedule: content its owner has the assistant post to a conversation at set times."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone as django_timezone


class Schedule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    conversation = models.ForeignKey("workspaces.Conversation", on_delete=models.CASCADE, related_name="schedules")
    content = models.TextField()
    cron = models.CharField(max_length=120)
    timezone = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    # The next due time (UTC). NULL while inactive, so the claim's index holds only what can be due:
    # its cost is that of the due rows, not of every schedule.
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_input_id = models.UUIDField(null=True, blank=True)
    # Why the system paused it (the owner left the conversation or was deactivated); "" otherwise.
    paused_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=django_timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "created_at"], name="schedule_owner_created")]

    def __str__(self) -> str:
        return f"{self.cron} ({self.timezone}) -> {self.conversation_id}"
