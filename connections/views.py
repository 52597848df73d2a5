"""`/connections` (the caller's accounts at `oauth` experts), the OAuth callback, and the core's
client ID metadata document. Parse, authorize (only experts the caller may use: else 404), call
one service."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import CortexError, ErrorCode
from common.web.addresses import client_address
from common.web.requests import AuthenticatedRequest
from common.web.views import validated
from connections import selectors, services

COOKIE = "cortex_oauth_flow"


class ConnectionSerializer(serializers.Serializer):
    expert_id = serializers.UUIDField()
    workspace_id = serializers.UUIDField()
    expert = serializers.CharField()
    status = serializers.ChoiceField(choices=["connected", "not_connected", "needs_reconsent"])
    scopes = serializers.ListField(child=serializers.CharField())
    connected_at = serializers.CharField(allow_null=True)
    expires_at = serializers.CharField(allow_null=True)


class ConnectInputSerializer(serializers.Serializer):
    return_to = serializers.CharField(max_length=400, required=False, default="/console/")

    def validate_return_to(self, value: str) -> str:
        if not value.startswith("/") or value.startswith("//") or "\\" in value:
            raise serializers.ValidationError("A path on this site (starting with a single /).")
        return value


def _expert(request: AuthenticatedRequest, expert_id: str):
    expert = selectors.oauth_expert_for_user(user_id=request.user.id, expert_id=expert_id)
    if expert is None:
        raise CortexError(ErrorCode.NOT_FOUND, "No such expert.")
    return expert


class ConnectionListApi(APIView):
    @extend_schema(
        operation_id="connection_list",
        description="The caller's own account connection, for every `oauth` expert they may use.",
        responses={200: inline_serializer("ConnectionList", {"connections": ConnectionSerializer(many=True)})},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response({"connections": selectors.connection_list(user_id=request.user.id)})


class ConnectionDetailApi(APIView):
    @extend_schema(
        operation_id="connection_start",
        request=ConnectInputSerializer,
        description="Start connecting the caller's account (authorization code with PKCE): open"
        " `authorization_url` in this browser; an HttpOnly cookie binds the flow to it. The callback"
        " redirects to `return_to?connected=<expert_id>` or `?connect_error=<code>`.",
        responses={200: inline_serializer("ConnectionStart", {"authorization_url": serializers.CharField()})},
    )
    def post(self, request: AuthenticatedRequest, expert_id: str) -> Response:
        expert = _expert(request, expert_id)
        data = validated(ConnectInputSerializer, request.data)
        url, cookie = services.flow_start(user_id=request.user.id, expert=expert, return_to=data["return_to"])
        response = Response({"authorization_url": url})
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=services.FLOW_SECONDS,
            path="/oauth/callback",
            httponly=True,
            secure=request.is_secure(),
            samesite="Lax",
        )
        return response

    @extend_schema(operation_id="connection_delete", responses={204: None})
    def delete(self, request: AuthenticatedRequest, expert_id: str) -> Response:
        expert = _expert(request, expert_id)
        services.disconnect(user_id=request.user.id, expert=expert, ip=client_address(request._request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _back(return_to: str, **query: str) -> HttpResponse:
    separator = "&" if "?" in return_to else "?"
    response = HttpResponseRedirect(f"{return_to}{separator}{urlencode(query)}")
    response.delete_cookie(COOKIE, path="/oauth/callback")
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    """The authorization server sends the browser back here: `state`, the cookie and `iss` are
    checked, the code redeemed, and the browser sent to `return_to`."""
    params = request.GET
    try:
        flow, _connection = services.flow_finish(
            state=params.get("state", ""),
            code=params.get("code", ""),
            iss=params.get("iss"),
            error=params.get("error"),
            cookie=request.COOKIES.get(COOKIE, ""),
            ip=client_address(request),
        )
    except services.ConnectFailed as failed:
        return _back(failed.return_to, connect_error=failed.code)
    services.tools_discover(expert=flow.expert, user_id=flow.user_id)
    return _back(flow.return_to, connected=str(flow.expert_id))


@csrf_exempt
@require_GET
def client_metadata(request: HttpRequest) -> JsonResponse:
    """The core's client ID metadata document (public: its URL is the client id)."""
    response = JsonResponse(services.client_metadata_document())
    response["Cache-Control"] = "public, max-age=3600"
    return response
