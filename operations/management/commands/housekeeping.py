"""`manage.py housekeeping`: prune everything that would otherwise grow without bound.

- stream events past EVENT_RETENTION_HOURS, idempotency records, expired stream tickets
  (`prune_events`);
- delivered memory outbox entries past OUTBOX_RETENTION_HOURS (failed ones stay for an operator);
- expired outstanding and blacklisted JWTs (simplejwt's `flushexpiredtokens`);
- finished webhook deliveries past OUTBOX_RETENTION_HOURS;
- and it runs due schedules, as the turn worker does (each due time runs once whoever claims it).
- audit log entries past AUDIT_RETENTION_DAYS.

Run once (from cron), or with `--every SECONDS` as a long-running process until SIGTERM/SIGINT:
`run_cortex` (and so `make run`) keeps one running. Every step is an idempotent delete, so
several copies running at once (one per host) do no harm.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from audit.services import entries_prune
from common.loops import run_until_stopped
from mcp_services.outbox import services
from schedules import services as schedule_services
from webhooks import services as webhook_services


class Command(BaseCommand):
    help = "Prune old events, tickets, idempotency records, delivered outbox entries, expired JWTs and audit entries."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=None, help="Keep running, pruning every this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"]
        if not every:
            self.stdout.write(self.run_once())
            return
        run_until_stopped(self.run_once, every=every, name="housekeeping", log=self.stderr.write)

    def run_once(self) -> str:
        events = io.StringIO()
        call_command("prune_events", stdout=events)
        outbox = services.outbox_prune(older_than=timedelta(hours=settings.CORTEX["OUTBOX_RETENTION_HOURS"]))
        expired_tokens = OutstandingToken.objects.filter(expires_at__lte=timezone.now()).count()
        call_command("flushexpiredtokens")
        retention = timedelta(hours=settings.CORTEX["OUTBOX_RETENTION_HOURS"])
        deliveries = webhook_services.deliveries_prune(older_than=retention)
        audit_entries = entries_prune()
        # Published by the streams' catch-up (this process has no streams of its own to reach).
        schedule_services.schedules_run_due()
        return (
            f"housekeeping: {events.getvalue().strip()} Deleted {outbox} delivered outbox entries "
            f"(older than {settings.CORTEX['OUTBOX_RETENTION_HOURS']} h), {deliveries} finished webhook"
            f" deliveries, {expired_tokens} expired JWTs, "
            f"{audit_entries} audit entries (older than {settings.CORTEX['AUDIT_RETENTION_DAYS']} days)."
        )
