"""`manage.py webhook_worker`: deliver webhooks until SIGTERM/SIGINT (see `webhooks.delivery`)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand

from common import tracing
from webhooks.delivery import DeliveryWorker


class Command(BaseCommand):
    help = "Deliver the webhooks' pending events (Standard Webhooks), with retries and backoff."

    def handle(self, *args: Any, **options: Any) -> None:
        tracing.setup(tracing.WEBHOOKS)
        asyncio.run(self._main())

    async def _main(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker = DeliveryWorker()
        self.stderr.write(f"webhook worker: running as {worker.owner}")
        self.stderr.flush()
        await worker.run(stop)
        self.stderr.write("webhook worker: stopped")
