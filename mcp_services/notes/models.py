from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class Note(models.Model):
    """A note of one workspace. `workspace_id` is a plain column, not a foreign key: the notes
    expert is its own service and knows workspaces only from the tokens it is called with."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace_id = models.UUIDField(db_index=True)
    author_id = models.UUIDField()
    title = models.CharField(max_length=200)
    body = models.TextField(max_length=20_000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace_id", "-created_at"], name="note_workspace_recent")]

    def __str__(self) -> str:
        return self.title
