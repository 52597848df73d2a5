"""Assistant turns: the work an input starts in a conversation with a responder (or a direct call).

A turn is written in the transaction that accepts its input (`workspaces.services.messages_create`
through the `messages_created` hook), then leased by a turn worker (`manage.py turn_worker`) the way
the memory outbox is: a worker owns a running turn while its lease is fresh and renews it while it
works; a lease that expires (the worker died) lets any worker end the turn.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Turn(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting"  # for an answer in the inbox (`turns.inbox`): no worker holds it
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        ECHO = "echo"
        LLM = "llm"
        DIRECT = "direct", "direct expert call"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey("workspaces.Conversation", on_delete=models.CASCADE, related_name="turns")
    # One turn per input: what makes the turn idempotent with its input.
    input_message = models.OneToOneField("workspaces.Message", on_delete=models.CASCADE, related_name="turn")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # `direct`: the call as parsed once from the input (`workspaces.services.DirectCall`:
    # expert, tool, and the arguments' JSON text, which the turn parses and may refuse).
    direct_call = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # The input's time: turns of a conversation run one at a time in this order (then by id).
    created_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)  # started_at + TURN_TIME_LIMIT_SECONDS
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=20, blank=True)  # "interrupted": a newer input's (turn_policy)
    # The oldest open turn of its conversation: the only one that may run. Kept by every write that
    # opens or ends a turn (under the conversation's row lock), so the claim reads the heads alone
    # and its cost does not grow with the turns queued behind them.
    head = models.BooleanField(default=False)
    # A queued head of a user at their running-turn cap (TURN_MAX_RUNNING_PER_USER) is parked by
    # the claim, out of `turn_runnable`, so no claim reads it again while the cap holds; when one of
    # the user's running turns ends, their oldest parked heads (as many as the share that freed) are
    # unparked (`turns.services._unpark`).
    parked = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    result_message = models.ForeignKey(
        "workspaces.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)
    # A waiting turn: when it is due again (its request's expiry, or now once answered), the time
    # limit it had left when it paused (waiting does not count), and what its responder needs to
    # go on (`turns.inbox.pause`).
    resume_at = models.DateTimeField(null=True, blank=True)
    time_left = models.FloatField(null=True, blank=True)
    state = models.JSONField(null=True, blank=True)
    # The input's W3C `traceparent` when tracing is on (`common.tracing`): the worker's turn span
    # continues the trace of the request that started it.
    trace_context = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["created_at", "id"],
                name="turn_open",
                condition=models.Q(status__in=["queued", "running"]),
            ),
            models.Index(fields=["resume_at"], name="turn_waiting", condition=models.Q(status="waiting")),
            models.Index(fields=["conversation", "created_at", "id"], name="turn_conversation_order"),
            models.Index(
                fields=["created_at", "id"],
                name="turn_runnable",
                condition=models.Q(head=True, status="queued", parked=False),
            ),
            models.Index(
                fields=["user", "created_at", "id"],
                name="turn_parked",
                condition=models.Q(head=True, status="queued", parked=True),
            ),
            models.Index(
                fields=["user"], name="turn_unparked", condition=models.Q(head=True, status="queued", parked=False)
            ),
            models.Index(
                fields=["user", "lease_expires_at"], name="turn_running", condition=models.Q(status="running")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} turn {self.id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


from turns.inbox.models import InboxRequest  # noqa: E402,F401 - the app's models are found here
