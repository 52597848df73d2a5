"""One append-only table: entries are inserted, never updated (except erasure stripping what is
personal) and deleted only by housekeeping after AUDIT_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    id = models.BigAutoField(primary_key=True)  # the order of commits' inserts: the cursor
    at = models.DateTimeField(default=timezone.now)
    # Not a foreign key: the entries outlive an erased account (keeping only its id).
    actor_id = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=64)
    ip = models.GenericIPAddressField(null=True, blank=True)
    target = models.CharField(max_length=200, blank=True)  # what was acted on (an id, a provider)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["actor_id", "-id"], name="audit_actor_newest"),
            models.Index(fields=["at"], name="audit_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Audit entries are deleted only by housekeeping, after AUDIT_RETENTION_DAYS.")
