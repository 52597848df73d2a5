"""`manage.py memory_outbox_worker`: deliver the memory outbox until stopped (SIGTERM/SIGINT).

Woken by the core's commits when it leaves delivery to the worker (`MEMORY_DRAIN_BY_WORKER`, as
`run_cortex` runs them: `common.wakeups`, topic "outbox"), it lets a burst gather and drains; and it
polls for due entries every OUTBOX_POLL_SECONDS: retries after the exponential backoff, and entries
a core process committed but never got to send. Several workers may run; claims keep them apart and
the memory tools are idempotent. Delivered entries are pruned by `housekeeping`.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common import tracing, wakeups
from common.loops import run_until_stopped
from mcp_services.outbox import delivery


class Command(BaseCommand):
    help = "Deliver the memory outbox to the memory service, retrying with exponential backoff."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=None, help="Seconds between polls (OUTBOX_POLL_SECONDS).")

    def handle(self, *args, **options) -> None:
        tracing.setup(tracing.OUTBOX)
        poll = options["poll"] or settings.CORTEX["OUTBOX_POLL_SECONDS"]
        self.woken = threading.Event()
        wakeups.listen_in_thread("outbox", self.woken)
        run_until_stopped(
            self.drain_once, every=poll, name="memory outbox worker", log=self.stderr.write, woken=self.woken
        )

    def drain_once(self) -> str | None:
        delivery.gather(self.woken)
        # `outbox_drain` returned: nothing is due, the last batch was partial (what is due next
        # waits for the next wake-up or poll), or the service is struggling, so the loop waits.
        result = delivery.outbox_drain(backlog_only=True)
        if not result.claimed:
            return None
        if not result.retried:
            self.woken.set()  # what became due meanwhile: after the next gather, not the next poll
        return f"memory outbox: {result.delivered} delivered, {result.retried} to retry, {result.failed} refused"
