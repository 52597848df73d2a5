"""`manage.py memory_outbox_worker`: deliver the memory outbox until stopped (SIGTERM/SIGINT).

Polls for due entries every OUTBOX_POLL_SECONDS: retries after the exponential backoff, and
entries a core process committed but never got to send. Several workers may run; claims keep
them apart and the memory tools are idempotent. Delivered entries are pruned by `housekeeping`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common import tracing
from common.loops import run_until_stopped
from mcp_services.outbox import delivery


class Command(BaseCommand):
    help = "Deliver the memory outbox to the memory service, retrying with exponential backoff."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=None, help="Seconds between polls (OUTBOX_POLL_SECONDS).")

    def handle(self, *args, **options) -> None:
        tracing.setup(tracing.OUTBOX)
        poll = options["poll"] or settings.CORTEX["OUTBOX_POLL_SECONDS"]
        run_until_stopped(self.drain_once, every=poll, name="memory outbox worker", log=self.stderr.write)

    def drain_once(self) -> str | None:
        # `outbox_drain` returned: nothing is due, the last batch was partial (what is due next
        # waits for the next poll, unless the core's kicker takes it first), or the service is
        # struggling, so the loop waits.
        result = delivery.outbox_drain(backlog_only=True)
        if not result.claimed:
            return None
        return f"memory outbox: {result.delivered} delivered, {result.retried} to retry, {result.failed} refused"
