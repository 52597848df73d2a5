"""`manage.py turn_worker`: run assistant turns until stopped (SIGTERM/SIGINT).

Several workers may run (leases keep them apart); `run_cortex` supervises one. On SIGTERM the turns
it is running end as failed at once; a worker killed outright leaves its turns to the next worker,
which fails them once their lease (TURN_LEASE_SECONDS) expires.
"""

from __future__ import annotations

import asyncio
import gc
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common import tracing
from mcp_services.experts import discovery
from turns.worker import TurnWorker


class Command(BaseCommand):
    help = "Run assistant turns (echo, llm, direct expert calls) leased from the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=None, help="Turns at once (TURN_CONCURRENCY).")

    def handle(self, *args, **options) -> None:
        tracing.setup(tracing.TURN_WORKER)
        if options["concurrency"]:
            settings.CORTEX["TURN_CONCURRENCY"] = options["concurrency"]
        if settings.CORTEX["LLM_BASE_URL"] and settings.CORTEX["LLM_MODEL"]:
            # The model's client (about 0.8 s of CPU to import) now, not in the first `llm` turn;
            # without a model configured (echo and expert turns only) it is never imported.
            import openai  # noqa: F401
        # Every expert call mints the expert's token (mcp_services.experts.tokens): PyJWT (about 40 ms)
        # now, not inside the first `tool.call` after an answer (its p99 showed it, bench.turns).
        import jwt  # noqa: F401

        # Start-up is over (as in the core, cortex_site/asgi.py): what it built lives as long as the
        # process; frozen, the full collections walk only what the turns made, a shorter pause in the
        # middle of a claim or a write.
        gc.collect()
        gc.freeze()
        try:
            import uvloop
        except ImportError:
            asyncio.run(self._main())
        else:
            uvloop.run(self._main())

    async def _main(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        discovery.prepare()  # the first expert call's one-off costs now, not inside a turn
        worker = TurnWorker()
        relay = "channel layer (Redis)" if settings.REDIS_URL else (settings.CORTEX["CORE_URL"] or "none")
        self.stderr.write(
            f"turn worker: running as {worker.owner}, up to {settings.CORTEX['TURN_CONCURRENCY']} turns, relay {relay}"
        )
        await worker.run(stop)
        self.stderr.write("turn worker: stopped")
