"""`manage.py sync_memory`: drain the memory outbox by hand and report what is left."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mcp_services.outbox import delivery, selectors


class Command(BaseCommand):
    help = "Deliver pending memory outbox entries now (by default ignoring their backoff schedule)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--respect-backoff", action="store_true", help="Only send entries whose next attempt is due."
        )

    def handle(self, *args, **options) -> None:
        total = delivery.outbox_drain(ignore_schedule=not options["respect_backoff"])
        pending = selectors.outbox_pending_count()
        self.stdout.write(
            f"delivered {total.delivered}, failed to deliver {total.retried} (will retry), "
            f"refused {total.failed}; {pending} pending"
        )
        if total.retried:
            raise CommandError("the memory service is unavailable; pending entries stay queued")
