"""`POST /output/ticket`: a single-use ticket for `?ticket=` on the streams (browsers), and the
stream cookie that lets EventSource's built-in reconnect resume after the ticket is spent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.requests import AuthenticatedRequest
from accounts.throttles import GcraScopedRateThrottle
from streaming import services


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
