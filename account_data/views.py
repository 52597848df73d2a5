"""`/memory` and `/account`: thin views over `account_data.memory` (the memory service over MCP),
`account_data.services` (erasure) and `account_data.export`."""

from __future__ import annotations

from datetime import UTC, datetime

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

import audit
from account_data import export, memory, services
from accounts.tokens import AUTH_TIME_CLAIM
from audit import selectors as audit_selectors
from common.errors import CortexError, ErrorCode
from common.fields import validate_metadata
from common.web.addresses import client_address
from common.web.requests import AuthenticatedRequest
from common.web.throttles import GcraScopedRateThrottle
from common.web.views import validated
from mcp_services.basics import MAX_CONTENT_CHARS, MAX_KEY_CHARS, MAX_QUERY_CHARS


class MemoryItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    content = serializers.CharField()
    conversation_id = serializers.CharField(allow_null=True)
    timestamp = serializers.CharField(allow_null=True)
    metadata = serializers.DictField()
    score = serializers.FloatField(required=False, help_text="With `query` only.")
    score_parts = serializers.DictField(
        required=False,
        help_text="With `query` only: keyword_rank, similarity, recency, coverage, exact (see the memory service).",
    )


class MemoryQuerySerializer(serializers.Serializer):
    query = serializers.CharField(required=False, allow_blank=True, max_length=MAX_QUERY_CHARS)
    conversation_id = serializers.CharField(required=False, max_length=MAX_KEY_CHARS)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)
    cursor = serializers.CharField(required=False, max_length=MAX_KEY_CHARS)


class MemoryAddSerializer(serializers.Serializer):
    content = serializers.CharField(max_length=MAX_CONTENT_CHARS)
    metadata = serializers.JSONField(required=False, default=dict, validators=[validate_metadata])


class MemoryCorrectSerializer(serializers.Serializer):
    content = serializers.CharField(max_length=MAX_CONTENT_CHARS)


class AccountDeleteSerializer(serializers.Serializer):
    password = serializers.CharField(required=False, allow_blank=True, max_length=4096, trim_whitespace=False)
    confirm = serializers.CharField(required=False, max_length=254)


class _MemoryApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "memory"  # per user: MEMORY_RATE
    error_statuses = (503,)  # the memory service is down


class MemoryListApi(_MemoryApi):
    @extend_schema(
        operation_id="memory_list",
        description=(
            "The caller's memory items, newest first, `limit` at a time (keyset pagination: pass "
            "`next_cursor` as `cursor`). With `query`: the best `limit` items for it (hybrid search), "
            "each with its `score` and `score_parts`, and no `next_cursor`."
        ),
        parameters=[MemoryQuerySerializer],
        responses={
            200: inline_serializer(
                "MemoryList",
                fields={
                    "items": MemoryItemSerializer(many=True),
                    "next_cursor": serializers.CharField(allow_null=True),
                },
            )
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        data = validated(MemoryQuerySerializer, request.query_params)
        conversation_id = data.get("conversation_id") or None
        if data.get("query"):
            items = memory.memory_search(
                user_id=request.user.id, query=data["query"], limit=data["limit"], conversation_id=conversation_id
            )
            return Response({"items": items, "next_cursor": None})
        found, following = memory.memory_list(
            user_id=request.user.id, limit=data["limit"], cursor=data.get("cursor"), conversation_id=conversation_id
        )
        return Response({"items": [memory.public_item(item) for item in found], "next_cursor": following})

    @extend_schema(
        operation_id="memory_add",
        description="Remember something that was never said in a conversation.",
        request=MemoryAddSerializer,
        responses={201: inline_serializer("MemoryAdded", fields={"item": MemoryItemSerializer()})},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        item = memory.memory_add(user_id=request.user.id, **validated(MemoryAddSerializer, request.data))
        return Response({"item": item}, status=status.HTTP_201_CREATED)


class MemoryDetailApi(_MemoryApi):
    @extend_schema(
        operation_id="memory_get",
        description="One of the caller's items; another user's is a 404 like a missing one.",
        responses={200: inline_serializer("MemoryItemOne", fields={"item": MemoryItemSerializer()})},
    )
    def get(self, request: AuthenticatedRequest, item_id: str) -> Response:
        return Response({"item": memory.memory_get(user_id=request.user.id, item_id=item_id)})

    @extend_schema(
        operation_id="memory_correct",
        description="Correct an item: re-embedded at once, found by its new meaning and not its old one.",
        request=MemoryCorrectSerializer,
        responses={200: inline_serializer("MemoryCorrected", fields={"item": MemoryItemSerializer()})},
    )
    def patch(self, request: AuthenticatedRequest, item_id: str) -> Response:
        content = validated(MemoryCorrectSerializer, request.data)["content"]
        item = memory.memory_correct(user_id=request.user.id, item_id=item_id, content=content)
        return Response({"item": item})

    @extend_schema(
        operation_id="memory_delete",
        description="Delete an item: gone from every search, history and context at once.",
        responses={204: None},
    )
    def delete(self, request: AuthenticatedRequest, item_id: str) -> Response:
        memory.memory_delete(user_id=request.user.id, item_id=item_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "account_erase"  # per user: ACCOUNT_ERASE_RATE (password guesses)
    error_statuses = (
        400,
        413,
        415,
    )  # 401 (always listed): an identity-only erasure needs a fresh sign-in; a DELETE with a body (common.schema reads bodies of POST, PUT, PATCH)

    @extend_schema(
        operation_id="account_delete",
        description=(
            "Delete the caller's account as the admin's user deletion does: workspaces it owns, its "
            "messages, memory (purged in the memory service), tokens and open streams. An account "
            "with a password sends it (`password`); an identity-only account sends its email address "
            "as `confirm` with an access token whose `auth_time` (its sign-in; a refresh keeps it) is no older "
            "than ACCOUNT_ERASE_FRESH_SECONDS (default 300): else 401 `invalid_token`, sign in again."
        ),
        request=AccountDeleteSerializer,
        responses={204: None},
    )
    def delete(self, request: AuthenticatedRequest) -> Response:
        body = validated(AccountDeleteSerializer, request.data)
        services.account_erase(
            user=request.user,
            password=body.get("password"),
            confirm=body.get("confirm"),
            auth_time=getattr(request.auth, "payload", {}).get(AUTH_TIME_CLAIM),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountExportApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "export"  # per user: EXPORT_RATE

    @extend_schema(
        operation_id="account_export",
        description=(
            "Everything the account holds as one download (NDJSON, `cortex-export/1`: see the README): "
            "profile, linked identities, workspaces it owns, their experts (no secrets), conversations it "
            "takes part in with their messages, its turns, its inbox requests with its answers, and memory items. Streamed in pages: memory use does not "
            "grow with the account. Limited per user (EXPORT_RATE)."
        ),
        responses={(200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY)},
    )
    def get(self, request: AuthenticatedRequest) -> StreamingHttpResponse:
        audit.record(request.user, "account.exported", ip=client_address(request._request))
        day = datetime.now(UTC).strftime("%Y%m%d")
        response = StreamingHttpResponse(export.export_chunks(request.user), content_type="application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="cortex-export-{day}.ndjson"'
        response["Cache-Control"] = "no-store"
        return response


class AuditEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.CharField()
    action = serializers.CharField(help_text="`auth.login`, `auth.login_failed`, `auth.logout`, ... (see the README).")
    ip = serializers.CharField(required=False, help_text="The client's address, when the action came over HTTP.")
    target = serializers.CharField(required=False, help_text="What was acted on (an id, a provider).")
    detail = serializers.DictField()


class AuditQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(required=False, max_length=40)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class AccountAuditApi(APIView):
    @extend_schema(
        operation_id="account_audit",
        description=(
            "The caller's own security record (the audit log's entries whose actor they are), newest first,"
            " `limit` at a time: pass `next_cursor` as `cursor`."
        ),
        parameters=[AuditQuerySerializer],
        responses={
            200: inline_serializer(
                "AccountAudit",
                fields={
                    "items": AuditEntrySerializer(many=True),
                    "next_cursor": serializers.CharField(allow_null=True),
                },
            )
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        query = validated(AuditQuerySerializer, request.query_params)
        before = None
        if query.get("cursor"):
            try:
                before = int(query["cursor"])
            except ValueError:
                raise CortexError(
                    ErrorCode.INVALID_INPUT, "Not a cursor of this list.", fields={"cursor": ["Invalid cursor."]}
                ) from None
        items, last = audit_selectors.entries_for_actor(actor_id=request.user.id, before=before, limit=query["limit"])
        return Response({"items": items, "next_cursor": str(last) if last is not None else None})
