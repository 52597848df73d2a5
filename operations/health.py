"""Liveness and readiness. Plain Django views: no auth, no DRF overhead, GET only (CSRF exempt, so
another method is a 405, not a CSRF refusal)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@csrf_exempt
@require_GET
def root(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "online", "service": "Cortex Core"})


@csrf_exempt
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_channel_layer() -> None:
    """A message through the layer and back (Redis when configured)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def round_trip() -> None:
        import asyncio

        channel = await layer.new_channel("readyz.")
        await layer.send(channel, {"type": "readyz.ping"})
        async with asyncio.timeout(2):
            await layer.receive(channel)

    async_to_sync(round_trip)()


def _import_the_sdk() -> None:
    """The services' check calls them over MCP under READYZ_TIMEOUT_SECONDS: the SDK (about a second
    of CPU to import, seconds on a loaded machine) is imported before that limit starts, by the first
    probe (`readyz`, in a thread), unless the core imported it at start (cortex_site/asgi.py: a core
    that delivers memory after each commit)."""
    import mcp  # noqa: F401


def _check_services() -> dict[str, str]:
    """Memory and cognition, checked concurrently over the process's long-lived MCP clients."""
    import asyncio

    from mcp_services import client

    services = {"memory": client.memory(), "cognition": client.cognition()}

    async def check_all() -> list[BaseException | None]:
        return await asyncio.gather(*(service.check() for service in services.values()), return_exceptions=True)

    try:
        outcomes = client.call(check_all)
    except Exception as exc:  # noqa: BLE001 - reported as the failing part
        outcomes = [exc] * len(services)
    return {name: "ok" if outcome is None else "unavailable" for name, outcome in zip(services, outcomes, strict=True)}


class Readiness:
    """The readiness report, computed at most once per `ttl` seconds per process, and bounded.

    Concurrent requests share one check in flight and then its cached result, so a burst of probes
    costs one round of checks. Each check runs in a one-thread executor of its own and is waited
    for at most `timeout` seconds; a check still running from an earlier round (a hung dependency)
    is reported unavailable without starting another. So however long a dependency hangs, readiness
    holds at most one thread and one database connection per check.
    """

    def __init__(
        self,
        checks: dict[str, Callable[[], dict[str, str] | None]],
        *,
        reports: dict[str, list[str]] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.checks = checks
        self._prepare = prepare  # run once, before the first round and its time limits (an import)
        self.reports = reports or {}  # a check that reports several parts (services: memory, cognition)
        self._lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._cached: tuple[float, Report] | None = None
        self._round: Future[Report] | None = None
        self._rounds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")
        self._executors = {
            name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"readyz-{name}") for name in checks
        }
        self._running: dict[str, Future] = {}

    def report(self) -> Future[Report]:
        """A future of the current report: already done when the cached one is fresh."""
        cortex = settings.CORTEX
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < cortex["READYZ_CACHE_SECONDS"]:
                done: Future[Report] = Future()
                done.set_result(self._cached[1])
                return done
            if self._round is None or self._round.done():
                self._round = self._rounds.submit(self._check_all, float(cortex["READYZ_TIMEOUT_SECONDS"]))
            return self._round

    @property
    def prepared(self) -> bool:
        return self._prepare is None

    def prepare(self) -> None:
        """What the checks need before they can run within their limits (once per process)."""
        with self._prepare_lock:
            if self._prepare is not None:
                self._prepare()
                self._prepare = None

    def _check_all(self, timeout: float) -> Report:
        futures: dict[str, Future] = {}
        checks: dict[str, str] = {}
        for name, check in self.checks.items():
            running = self._running.get(name)
            if running is not None and not running.done():
                logger.warning("readiness check %s is still running from an earlier round", name)
                checks.update(self._unavailable(name))
                continue
            futures[name] = self._running[name] = self._executors[name].submit(check)
        wait(futures.values(), timeout=timeout)
        for name, future in futures.items():
            if not future.done():
                logger.warning("readiness check %s did not answer in %.0f s", name, timeout)
                checks.update(self._unavailable(name))
            elif future.exception() is not None:
                logger.warning("readiness check %s failed", name, exc_info=future.exception())
                checks.update(self._unavailable(name))
            else:
                checks.update(future.result() or {name: "ok"})
        report = Report(checks={name: checks[name] for name in self._order(checks)})
        with self._lock:
            self._cached = (time.monotonic(), report)
        return report

    def _unavailable(self, name: str) -> dict[str, str]:
        return dict.fromkeys(self.reports.get(name, [name]), "unavailable")

    def _order(self, checks: dict[str, str]) -> list[str]:
        order = ["database", "channel_layer", "memory", "cognition"]
        return sorted(checks, key=lambda name: order.index(name) if name in order else len(order))

    def forget(self) -> None:
        with self._lock:
            self._cached = None


@dataclass(frozen=True)
class Report:
    checks: dict[str, str]

    @property
    def failing(self) -> list[str]:
        return sorted(name for name, state in self.checks.items() if state != "ok")


def _check_database_then_close() -> None:
    from django.db import connection

    try:
        _check_database()
    finally:
        connection.close()  # this thread is not a request: give the connection back now


def _check_services_or_raise() -> dict[str, str]:
    try:
        return _check_services()
    finally:
        from django.db import connection

        connection.close()


readiness = Readiness(
    {
        "database": _check_database_then_close,
        "channel_layer": _check_channel_layer,
        "services": _check_services_or_raise,
    },
    reports={"services": ["memory", "cognition"]},
    prepare=_import_the_sdk,
)


@csrf_exempt
@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, channel layer, memory and cognition services all answer; else 503
    naming the failing parts (details go to the log, not to the unauthenticated caller).

    Cached for READYZ_CACHE_SECONDS and bounded by READYZ_TIMEOUT_SECONDS (see `Readiness`); an
    async view, so a probe waiting on a slow dependency holds no request thread.
    """
    if not readiness.prepared:  # the first probe imports the MCP SDK, before the bound below starts
        await asyncio.to_thread(readiness.prepare)
    future = readiness.report()
    bound = settings.CORTEX["READYZ_TIMEOUT_SECONDS"] + 1
    try:
        report = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout=bound)
    except TimeoutError:  # only if the round itself is stuck; each check is bounded already
        report = Report(checks=dict.fromkeys(("database", "channel_layer", "memory", "cognition"), "unavailable"))
    failing = report.failing
    if failing:
        return JsonResponse(
            {
                "status": "unavailable",
                "checks": report.checks,
                "error": {
                    "code": "service_unavailable",
                    "message": f"Not ready: {', '.join(failing)}.",
                    "fields": {"failing": failing},
                },
            },
            status=503,
        )
    return JsonResponse({"status": "ready", "checks": report.checks})
