"""`/config/workspace/<id>/experts`: registration by the workspace's owner, and the public keys.

Parse, authorize with the workspace's one access check (`expert_get_for_user` /
`workspace_get_for_user`: others get the same 404 as for a missing workspace), discover the tools
over MCP outside any transaction, then one service call. The requests that discover connect out
to a host the owner chose and wait for it: they are limited per user (`EXPERT_DISCOVERY_RATE`),
and the discoveries themselves in time and number (`discovery.discover`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

import audit
from common.web.addresses import client_address
from common.web.requests import AuthenticatedRequest
from common.web.throttles import GcraScopedRateThrottle
from common.web.views import validated
from mcp_services import client
from mcp_services.experts import credentials, tokens
from mcp_services.experts.serializers import ExpertInputSerializer, ExpertOutputSerializer, ExpertPatchSerializer
from workspaces import selectors, services
from workspaces.models import Expert

ExpertEnvelope = inline_serializer(
    "ExpertEnvelope", {"status": serializers.CharField(), "expert": ExpertOutputSerializer()}
)
ExpertListEnvelope = inline_serializer("ExpertListEnvelope", {"experts": ExpertOutputSerializer(many=True)})

DISCOVERY_NOTE = (
    " The expert's tools are discovered over MCP (`tools/list`) before this answers; an expert that"
    " cannot be reached is saved with `status` `unreachable` and the reason in `last_error`."
    " Requests that discover are limited per user (`EXPERT_DISCOVERY_RATE`, default 20/min: 429 with"
    " Retry-After); 503 when the process is already running EXPERT_DISCOVERY_CONCURRENCY discoveries."
)


class DiscoveryRateThrottle(GcraScopedRateThrottle):
    """The writes (create, patch, refresh) count against the user's discovery rate; reads do not."""

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method not in ("POST", "PATCH"):
            return True
        return super().allow_request(request, view)


def _discover(
    *, url: str, auth: str, user_id: Any, workspace_id: Any, expert: Expert | None = None
) -> services.ExpertDiscovery:
    """The tools, found on the caller's behalf. An `oauth` expert's are listed with a connected
    account (the caller's, once they connect): at registration it has none yet."""
    if auth == Expert.Auth.OAUTH and expert is None:
        return services.ExpertDiscovery(status=Expert.Status.NEEDS_CONNECTION, tools=[], discovered_at=timezone.now())
    # The MCP SDK is imported on the first discovery, not with the URLconf (mcp_services.basics).
    from mcp_services.experts.discovery import Caller, discover

    # The slot wait and the discovery are each bounded by EXPERT_DISCOVERY_TIMEOUT_SECONDS.
    limit = 2 * settings.EXPERT_DISCOVERY_TIMEOUT_SECONDS + 1
    caller = Caller(user_id, workspace_id, expert.id if expert else None, expert.name if expert else "")
    found = client.call(lambda: discover(url=url, auth=auth, caller=caller), timeout=limit)
    return found.outcome()


def _oauth_setup(*, url: str, options: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Discovery of the expert's authorization server and the core's registration with it
    (`connections`): 400 when neither works and no client was given."""
    return credentials.broker().setup(url=url, options=options, previous=previous)


class ExpertListCreateApi(APIView):
    throttle_classes = [DiscoveryRateThrottle]
    throttle_scope = "expert_discovery"
    error_statuses = (409, 503)  # for the schema (common.schema): a name already used; discoveries busy

    @extend_schema(operation_id="expert_list", responses={200: ExpertListEnvelope})
    def get(self, request: AuthenticatedRequest, workspace_id: str) -> Response:
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=workspace_id)
        experts = selectors.expert_list(workspace=workspace)
        return Response({"experts": ExpertOutputSerializer(experts, many=True).data})

    @extend_schema(
        operation_id="expert_create",
        request=ExpertInputSerializer,
        responses={201: ExpertEnvelope},
        description="Register an MCP expert in the workspace (owner only). A URL whose host is not in"
        " `EXPERT_ALLOWED_HOSTS` is a 400; a name already used in the workspace a 409." + DISCOVERY_NOTE,
    )
    def post(self, request: AuthenticatedRequest, workspace_id: str) -> Response:
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=workspace_id)
        data = validated(ExpertInputSerializer, request.data)
        oauth = None
        if data["auth"] == Expert.Auth.OAUTH:
            oauth = _oauth_setup(url=data["url"], options=data["oauth"], previous=None)
        discovery = _discover(url=data["url"], auth=data["auth"], user_id=request.user.id, workspace_id=workspace.id)
        with transaction.atomic():
            expert = services.expert_create(
                workspace=workspace,
                name=data["name"],
                url=data["url"],
                auth=data["auth"],
                allowed_tools=data["tools"],
                tool_policy=data["tool_policy"],
                discovery=discovery,
                oauth=oauth,
            )
            _audit(request, "expert.registered", expert, {"name": expert.name, "url": expert.url, "auth": expert.auth})
        return Response(
            {"status": "expert created", "expert": ExpertOutputSerializer(expert).data}, status=status.HTTP_201_CREATED
        )


def _audit(request: AuthenticatedRequest, action: str, expert: Expert, detail: dict) -> None:
    """Who may do what changed: an expert the workspace's turns may call (in the change's transaction)."""
    audit.record(
        request.user,
        action,
        ip=client_address(request._request),
        target=str(expert.id),
        detail={"workspace_id": str(expert.workspace_id), **detail},
    )


class ExpertDetailApi(APIView):
    throttle_classes = [DiscoveryRateThrottle]
    throttle_scope = "expert_discovery"
    error_statuses = (409, 503)  # a rename to a name already used; discoveries busy

    def _expert(self, request: AuthenticatedRequest, workspace_id: str, expert_id: str) -> Expert:
        return selectors.expert_get_for_user(user=request.user, workspace_id=workspace_id, expert_id=expert_id)

    @extend_schema(operation_id="expert_get", responses={200: ExpertEnvelope})
    def get(self, request: AuthenticatedRequest, workspace_id: str, expert_id: str) -> Response:
        expert = self._expert(request, workspace_id, expert_id)
        return Response({"status": "ok", "expert": ExpertOutputSerializer(expert).data})

    @extend_schema(
        operation_id="expert_update",
        request=ExpertPatchSerializer,
        responses={200: ExpertEnvelope},
        description="Change the name, URL, auth, tool allowlist or `tool_policy`. A changed URL or auth is discovered again."
        + DISCOVERY_NOTE,
    )
    def patch(self, request: AuthenticatedRequest, workspace_id: str, expert_id: str) -> Response:
        expert = self._expert(request, workspace_id, expert_id)
        data = validated(ExpertPatchSerializer, request.data)
        changes = {name: data[name] for name in ("name", "url", "auth", "tool_policy") if name in data}
        if "tools" in data:
            changes["allowed_tools"] = data["tools"]
        discovery = None
        moved = changes.get("url", expert.url) != expert.url or changes.get("auth", expert.auth) != expert.auth
        if changes.get("auth", expert.auth) == Expert.Auth.OAUTH and (moved or "oauth" in data):
            # Discovered and registered again: a new issuer gets its own client (credentials per issuer).
            changes["oauth"] = _oauth_setup(
                url=changes.get("url", expert.url), options=data.get("oauth") or {}, previous=expert.oauth
            )
        if moved:
            discovery = _discover(
                url=changes.get("url", expert.url),
                auth=changes.get("auth", expert.auth),
                user_id=request.user.id,
                workspace_id=expert.workspace_id,
                expert=None if changes.get("auth", expert.auth) == Expert.Auth.OAUTH else expert,
            )
        with transaction.atomic():
            expert = services.expert_update(expert=expert, discovery=discovery, **changes)
            _audit(request, "expert.changed", expert, {"changed": sorted(changes)})
        return Response({"status": "expert updated", "expert": ExpertOutputSerializer(expert).data})

    @extend_schema(operation_id="expert_delete", responses={204: None})
    def delete(self, request: AuthenticatedRequest, workspace_id: str, expert_id: str) -> Response:
        expert = self._expert(request, workspace_id, expert_id)
        with transaction.atomic():
            _audit(request, "expert.deleted", expert, {"name": expert.name})
            services.expert_delete(expert=expert)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExpertRefreshApi(APIView):
    throttle_classes = [DiscoveryRateThrottle]
    throttle_scope = "expert_discovery"
    error_statuses = (503,)  # discoveries busy

    @extend_schema(
        operation_id="expert_refresh",
        request=None,
        responses={200: ExpertEnvelope},
        description="Discover the expert's tools again now (its cache hint is otherwise honoured)." + DISCOVERY_NOTE,
    )
    def post(self, request: AuthenticatedRequest, workspace_id: str, expert_id: str) -> Response:
        expert = selectors.expert_get_for_user(user=request.user, workspace_id=workspace_id, expert_id=expert_id)
        discovery = _discover(
            url=expert.url, auth=expert.auth, user_id=request.user.id, workspace_id=expert.workspace_id, expert=expert
        )
        expert = services.expert_discovery_save(expert=expert, discovery=discovery)
        return Response({"status": "expert refreshed", "expert": ExpertOutputSerializer(expert).data})


@csrf_exempt
@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """The public keys of the tokens the core mints for experts (public: that is the point)."""
    response = JsonResponse(tokens.jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response
