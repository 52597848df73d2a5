"""Liveness and readiness. Plain Django views: no auth, no DRF overhead."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def root(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "online", "service": "Cortex Core"})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
