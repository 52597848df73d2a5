"""Liveness and readiness. Plain Django views: no auth, no DRF overhead, GET only (CSRF exempt, so
another method is a 405, not a CSRF refusal)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET


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


@csrf_exempt
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, channel layer, memory and cognition services all answer; else 503
    naming the failing parts (details go to the log, not to the unauthenticated caller)."""
    import logging

    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("channel_layer", _check_channel_layer)):
        try:
            check()
            checks[name] = "ok"
        except Exception:  # noqa: BLE001 - any failure means not ready
            logging.getLogger(__name__).warning("readiness check %s failed", name, exc_info=True)
            checks[name] = "unavailable"
    checks.update(_check_services())
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if failing:
        return JsonResponse(
            {
                "status": "unavailable",
                "checks": checks,
                "error": {
                    "code": "service_unavailable",
                    "message": f"Not ready: {', '.join(failing)}.",
                    "fields": {"failing": failing},
                },
            },
            status=503,
        )
    return JsonResponse({"status": "ready", "checks": checks})
