"""`GET /context`: the cognition service's context for the caller (and only the caller)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import CortexError, ErrorCode
from common.web.requests import AuthenticatedRequest
from common.web.throttles import GcraScopedRateThrottle
from mcp_services import client
from workspaces.selectors import conversation_get_for_user


class ContextQuerySerializer(serializers.Serializer):
    query = serializers.CharField(required=False, allow_blank=True, max_length=1000)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=10)
    conversation_id = serializers.UUIDField(required=False)


ContextOutputSerializer = inline_serializer(
    "Context",
    fields={
        "context": serializers.ListField(child=serializers.DictField()),
        "user_id": serializers.UUIDField(),
        "query": serializers.CharField(allow_null=True),
        "count": serializers.IntegerField(),
        "error": serializers.CharField(required=False),
    },
)


class ContextApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "context"  # per user: CONTEXT_RATE, 120/min by default
    error_statuses = (503,)  # for the schema (common.schema): the cognition service is down

    @extend_schema(
        operation_id="context_get",
        description=(
            "The cognition service's context for the caller (the user comes from the token). Without "
            "`query`: the newest items; with one: relevance blended with recency. With `conversation_id` "
            "(a conversation the caller takes part in, else 404): only that conversation's items. "
            "503 when the cognition service is down; if only memory is down, 200 with an empty "
            "context and `error`. Limited per user (`CONTEXT_RATE`, default 120/min): 429 with Retry-After."
        ),
        parameters=[ContextQuerySerializer],
        responses={200: ContextOutputSerializer},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        params = ContextQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        arguments = {"user_id": str(request.user.id), "query": data.get("query") or None, "limit": data["limit"]}
        if "conversation_id" in data:
            # Participants only; a foreign or missing conversation is the same 404.
            conversation = conversation_get_for_user(user=request.user, conversation_id=data["conversation_id"])
            arguments["conversation_id"] = str(conversation.id)
        cognition = client.cognition()
        try:
            result = client.call(lambda: cognition.call_tool("get_context", arguments))
        except CortexError as exc:
            raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, "The cognition service is unavailable.") from exc
        return Response(result)
