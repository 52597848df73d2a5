"""`POST /output/ticket`: a single-use ticket for `?ticket=` on the streams (browsers), and the
stream cookie that lets EventSource's built-in reconnect resume after the ticket is spent."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from accounts.throttles import GcraScopedRateThrottle
from rest_framework.views import APIView

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
    def post(self, request: Request) -> Response:
        response = Response(services.ticket_issue(user=request.user), headers={"Cache-Control": "no-store"})
        # Only the streams see it (path), no script reads it (HttpOnly), no other site sends it
        # (Strict); the page renews it by asking for a ticket again before it expires.
        response.set_cookie(
            services.STREAM_COOKIE,
            services.stream_cookie_issue(user=request.user),
            max_age=settings.CORTEX["STREAM_COOKIE_SECONDS"],
            path=services.STREAM_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Strict",
        )
        return response
