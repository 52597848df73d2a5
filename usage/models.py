"""What turns cost: one row per turn (`TurnUsage`), and running totals per user and per workspace
and month (`UsageTotal`) so that checking a budget reads two rows, never a sum over turns."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TurnUsage(models.Model):
    """A turn's model usage as the model reported it (zeros where it did not), its tool calls and
    durations. Added to when the turn pauses and when it ends (a turn may run on several workers)."""

    turn_id = models.UUIDField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # Plain ids: usage stays counted when a workspace or conversation is deleted.
    workspace_id = models.UUIDField()
    conversation_id = models.UUIDField()
    model = models.CharField(max_length=200, blank=True)  # empty: the turn called no model
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    model_requests = models.PositiveIntegerField(default=0)
    model_ms = models.PositiveBigIntegerField(default=0)  # time spent waiting on the model
    duration_ms = models.PositiveBigIntegerField(default=0)  # from the turn's start to its end
    created_at = models.DateTimeField(default=timezone.now)  # the turn's first record: its day

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="usage_user_time")]

    def __str__(self) -> str:
        return f"turn {self.turn_id}: {self.input_tokens}+{self.output_tokens} tokens"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class UsageTotal(models.Model):
    """Tokens (input + output) used in one calendar month (UTC) by a user, or in a workspace."""

    class Scope(models.TextChoices):
        USER = "user"
        WORKSPACE = "workspace"

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    owner_id = models.UUIDField()  # the user's or the workspace's id
    period = models.DateField()  # the month's first day
    tokens = models.PositiveBigIntegerField(default=0)
    turns = models.PositiveIntegerField(default=0)
    warned = models.BooleanField(default=False)  # `budget.warning` sent for this period

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "owner_id", "period"], name="usage_total_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.owner_id} {self.period:%Y-%m}: {self.tokens}"


class UserBudget(models.Model):
    """A per-user override of `USER_MONTHLY_TOKENS` (set in the admin); 0 means no budget."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="budget"
    )
    monthly_tokens = models.PositiveBigIntegerField(help_text="Tokens per calendar month (UTC); 0: no budget.")

    def __str__(self) -> str:
        return f"{self.user_id}: {self.monthly_tokens}"
