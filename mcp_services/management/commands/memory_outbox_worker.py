"""`manage.py memory_outbox_worker`: deliver the memory outbox until stopped (SIGTERM/SIGINT).

Polls for due entries every OUTBOX_POLL_SECONDS: retries after the exponential backoff, and
entries a core process committed but never got to send. Several workers may run; claims keep
them apart and the memory tools are idempotent. Delivered entries are pruned by `housekeeping`.
"""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from mcp_services.outbox import delivery


class Command(BaseCommand):
    help = "Deliver the memory outbox to the memory service, retrying with exponential backoff."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=None, help="Seconds between polls (OUTBOX_POLL_SECONDS).")

    def handle(self, *args, **options) -> None:
        poll = options["poll"] or settings.CORTEX["OUTBOX_POLL_SECONDS"]
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        self.stderr.write(f"memory outbox worker: polling every {poll}s")
        while not stop.is_set():
            try:
                result = delivery.outbox_drain()
                if result.claimed:
                    self.stderr.write(
                        f"memory outbox: {result.delivered} delivered, {result.retried} to retry, "
                        f"{result.failed} refused"
                    )
            except Exception as exc:  # noqa: BLE001 - the database or the service is down: keep polling
                self.stderr.write(f"memory outbox drain failed: {exc!r}")
            finally:
                connections.close_all()
            stop.wait(poll)  # `outbox_drain` returned: nothing is due, or the service is struggling
        self.stderr.write("memory outbox worker: stopped")
