"""`POST /output/ticket`: a single-use ticket for `?ticket=` on the streams (browsers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
        return Response(
            services.ticket_issue(user=request.user, credential_expires_at=expires),
            headers={"Cache-Control": "no-store"},
        )
