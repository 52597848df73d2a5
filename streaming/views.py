"""`POST /output/ticket`: a single-use ticket for `?ticket=` on the streams (browsers), and the
stream cookie that lets EventSource's built-in reconnect resume after the ticket is spent.

`POST /internal/events`: the relay for events committed by another process of the deployment (the
turn worker) when there is no shared channel layer (no REDIS_URL): it hands them to this process's
streams. Loopback peers with the relay token only (`CORTEX_RELAY_TOKEN`, which `run_cortex` gives to
the core and the turn worker alone); not part of the public API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ErrorCode, error_body
from common.web.addresses import peer_is_loopback
from common.web.requests import AuthenticatedRequest
from common.web.throttles import GcraScopedRateThrottle
from streaming import selectors, services


class TicketApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "ticket"

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "StreamTicket", {"ticket": serializers.CharField(), "expires_in": serializers.IntegerField()}
            )
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        token: Any = request.auth  # the validated access token
        expires = datetime.fromtimestamp(token["exp"], tz=UTC) if token is not None else None
        # A logout ends the stream credentials issued before it; an access token from before it
        # must not simply ask for new ones (it stays valid on the REST API until it expires). As
        # for streams, its whole-second `iat` counts as the end of that second (`streaming.auth`).
        issued_at = datetime.fromtimestamp(int(token.get("iat", 0)) + 1, tz=UTC) if token is not None else None
        if issued_at is not None and not selectors.user_may_stream(user_id=request.user.id, issued_at=issued_at):
            raise AuthenticationFailed(
                "This access token was issued before a logout; sign in again.", code="invalid_token"
            )
        response = Response(
            services.ticket_issue(user=request.user, credential_expires_at=expires),
            headers={"Cache-Control": "no-store"},
        )
        # Only the streams see it (path), no script reads it (HttpOnly), no other site sends it
        # (Strict); the page renews it by asking for a ticket again before it expires. Like the
        # ticket, it lasts no longer than the access token that asked for it.
        value, cookie_expires = services.stream_cookie_issue(user=request.user, credential_expires_at=expires)
        response.set_cookie(
            services.STREAM_COOKIE,
            value,
            max_age=max(0, int((cookie_expires - timezone.now()).total_seconds())),
            path=services.STREAM_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Strict",
        )
        return response


RELAY_MAX_BYTES = 16 * 1024 * 1024


@csrf_exempt
async def internal_events(request: HttpRequest) -> HttpResponse:
    """Relay committed events (their live copies, as `events_append` made them) to this process's
    streams. A peer that is not on loopback, or has not the relay token, gets the 404 of a path that
    does not exist: whoever could post here could show any user any event."""
    token = settings.CORTEX["RELAY_TOKEN"]
    header = request.headers.get("Authorization", "")
    if not token or not peer_is_loopback(request) or not constant_time_compare(header, f"Bearer {token}"):
        return JsonResponse(error_body(ErrorCode.NOT_FOUND, "Not found."), status=404)
    if request.method != "POST":
        return JsonResponse(error_body(ErrorCode.METHOD_NOT_ALLOWED, "Use POST."), status=405)
    try:
        # Not `request.body`: DATA_UPLOAD_MAX_MEMORY_SIZE bounds clients' requests, and one relayed
        # event (a long answer) may be larger; the sender is the deployment itself (the token), and
        # `common.web.asgi.RequestGuard` lets loopback peers send RELAY_MAX_BYTES on this path.
        messages = services.live_messages_valid(json.loads(request.read(RELAY_MAX_BYTES)).get("events"))
    except (ValueError, AttributeError):
        messages = None
    if messages is None:
        return JsonResponse(
            error_body(ErrorCode.INVALID_INPUT, 'Expected {"events": [[group, event], ...]}.'), status=400
        )
    await services.events_publish_now(messages)
    return HttpResponse(status=204)
