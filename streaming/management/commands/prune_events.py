"""Delete events past retention, expired idempotency records and tickets (run it from cron)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.services import events_prune


class Command(BaseCommand):
    help = (
        "Delete stream events older than EVENT_RETENTION_HOURS, Idempotency-Key records older than "
        "IDEMPOTENCY_HOURS, and expired stream tickets."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = events_prune()
        self.stdout.write(
            f"Deleted {result['events']} events (older than {settings.CORTEX['EVENT_RETENTION_HOURS']} h), "
            f"{result['idempotency_records']} idempotency records, {result['tickets']} expired tickets."
        )
