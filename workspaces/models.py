from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.fields import MetadataField


class ConfigRecord(models.Model):
    """What every configured object has: a UUID, the guide's `metadata`, and timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    metadata = MetadataField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]


class Workspace(ConfigRecord):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workspaces")

    def __str__(self) -> str:
        return self.name


class Conversation(ConfigRecord):
    class Responder(models.TextChoices):
        NONE = "none", "none (inputs only)"
        ECHO = "echo", "echo (development and tests)"
        LLM = "llm", "llm (OpenAI-compatible chat)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="conversations")
    topic = models.CharField(max_length=200)
    # Who answers an input here: nobody (the default), or an assistant turn (the `turns` app).
    responder = models.CharField(max_length=10, choices=Responder.choices, default=Responder.NONE)
    participants = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="conversations")

    def __str__(self) -> str:
        return self.topic


class Message(models.Model):
    """One accepted input, or an assistant's answer to one (`author`). `conversation` is null for
    input sent outside any conversation. An answer's `sender` is the user whose input started it."""

    class Author(models.TextChoices):
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, null=True, blank=True, related_name="messages"
    )
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=10, choices=Author.choices, default=Author.USER)
    content = models.TextField()
    metadata = MetadataField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["conversation", "-created_at", "-id"], name="message_conv_recent"),
            models.Index(fields=["sender", "-created_at"], name="message_sender_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.sender_id}: {self.content[:40]}"


class IdempotencyRecord(models.Model):
    """The first response to an `Idempotency-Key`, replayed for retries of the same request."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response = models.JSONField()
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.key}"
