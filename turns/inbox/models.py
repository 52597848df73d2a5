"""One request of the inbox: an approval or a question a waiting turn needs answered."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class InboxRequest(models.Model):
    class Kind(models.TextChoices):
        APPROVAL = "approval"
        QUESTION = "question"

    class Status(models.TextChoices):
        OPEN = "open"
        ANSWERED = "answered"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    turn = models.ForeignKey("turns.Turn", on_delete=models.CASCADE, related_name="inbox_requests")
    # The requester: the only one who may answer (the turn acts with their authority).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("workspaces.Conversation", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # The event's fields as every participant's log shows them (`approval.requested` /
    # `question.asked`): the arguments shown are exactly the ones sent on approval.
    data = models.JSONField(default=dict)
    answer = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="inbox_open", condition=models.Q(status="open")),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"
