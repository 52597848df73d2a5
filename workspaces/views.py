"""Config, input and history APIs: parse, authorize through the selectors, call one service."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common import tracing
from common.web.requests import AuthenticatedRequest
from common.web.throttles import GcraScopedRateThrottle
from common.web.views import AsyncAPIView, validated
from workspaces import selectors, services
from workspaces.serializers import (
    ConversationInputSerializer,
    ConversationListQuerySerializer,
    ConversationOutputSerializer,
    ConversationPatchSerializer,
    InputResponseSerializer,
    InputSerializer,
    MessageListQuerySerializer,
    MessageOutputSerializer,
    WorkspaceInputSerializer,
    WorkspaceOutputSerializer,
    WorkspacePatchSerializer,
    input_body_lean,
)
from workspaces.writer import writer


@functools.cache
def _envelope(name: str, serializer: type[serializers.Serializer], *, many: bool = False):
    """The response wrapper for the schema (built once per name: drf-spectacular wants one class)."""
    fields: dict[str, serializers.Field] = {name: serializer(many=many)}
    if not many:
        fields = {"status": serializers.CharField(), **fields}
    return inline_serializer(f"{name.title()}{'List' if many else ''}Envelope", fields=fields)


class WorkspaceListCreateApi(APIView):
    @extend_schema(
        operation_id="workspace_list", responses={200: _envelope("workspaces", WorkspaceOutputSerializer, many=True)}
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        workspaces = selectors.workspace_list(user=request.user)
        return Response({"workspaces": WorkspaceOutputSerializer(workspaces, many=True).data})

    @extend_schema(request=WorkspaceInputSerializer, responses={201: _envelope("workspace", WorkspaceOutputSerializer)})
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(WorkspaceInputSerializer, request.data)
        workspace = services.workspace_create(owner=request.user, **data)
        return Response(
            {"status": "workspace created", "workspace": WorkspaceOutputSerializer(workspace).data},
            status=status.HTTP_201_CREATED,
        )


class WorkspaceDetailApi(APIView):
    @extend_schema(responses={200: _envelope("workspace", WorkspaceOutputSerializer)})
    def get(self, request: AuthenticatedRequest, workspace_id: str) -> Response:
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=workspace_id)
        return Response({"status": "ok", "workspace": WorkspaceOutputSerializer(workspace).data})

    @extend_schema(request=WorkspacePatchSerializer, responses={200: _envelope("workspace", WorkspaceOutputSerializer)})
    def patch(self, request: AuthenticatedRequest, workspace_id: str) -> Response:
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=workspace_id)
        data = validated(WorkspacePatchSerializer, request.data)
        workspace = services.workspace_update(workspace=workspace, **data)
        return Response({"status": "workspace updated", "workspace": WorkspaceOutputSerializer(workspace).data})

    @extend_schema(responses={204: None})
    def delete(self, request: AuthenticatedRequest, workspace_id: str) -> Response:
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=workspace_id)
        services.workspace_delete(workspace=workspace)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationListCreateApi(APIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "conversation"  # creating, per user (CONVERSATION_RATE); listing is not limited
    error_statuses = (409,)  # for the schema: `personal` context with more than one participant

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    @extend_schema(
        operation_id="conversation_list",
        parameters=[ConversationListQuerySerializer],
        responses={200: _envelope("conversations", ConversationOutputSerializer, many=True)},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        query = validated(ConversationListQuerySerializer, request.query_params)
        conversations = selectors.conversation_list(user=request.user, workspace_id=query.get("workspace_id"))
        return Response({"conversations": ConversationOutputSerializer(conversations, many=True).data})

    @extend_schema(
        request=ConversationInputSerializer, responses={201: _envelope("conversation", ConversationOutputSerializer)}
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(ConversationInputSerializer, request.data)
        workspace = selectors.workspace_get_for_user(user=request.user, workspace_id=data.pop("workspace_id"))
        conversation = services.conversation_create(workspace=workspace, creator=request.user, **data)
        return Response(
            {"status": "conversation created", "conversation": ConversationOutputSerializer(conversation).data},
            status=status.HTTP_201_CREATED,
        )


class ConversationDetailApi(APIView):
    error_statuses = (409,)  # for the schema: `personal` context with more than one participant

    def _conversation(self, request: AuthenticatedRequest, conversation_id: str):
        return selectors.conversation_get_for_user(user=request.user, conversation_id=conversation_id, manage=True)

    @extend_schema(responses={200: _envelope("conversation", ConversationOutputSerializer)})
    def get(self, request: AuthenticatedRequest, conversation_id: str) -> Response:
        conversation = self._conversation(request, conversation_id)
        return Response({"status": "ok", "conversation": ConversationOutputSerializer(conversation).data})

    @extend_schema(
        request=ConversationPatchSerializer, responses={200: _envelope("conversation", ConversationOutputSerializer)}
    )
    def patch(self, request: AuthenticatedRequest, conversation_id: str) -> Response:
        conversation = self._conversation(request, conversation_id)
        data = validated(ConversationPatchSerializer, request.data)
        conversation = services.conversation_update(conversation=conversation, **data)
        return Response(
            {"status": "conversation updated", "conversation": ConversationOutputSerializer(conversation).data}
        )

    @extend_schema(responses={204: None})
    def delete(self, request: AuthenticatedRequest, conversation_id: str) -> Response:
        services.conversation_delete(conversation=self._conversation(request, conversation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InputApi(AsyncAPIView):
    throttle_classes = [GcraScopedRateThrottle]
    throttle_scope = "input"
    error_statuses = (409,)  # for the schema (common.schema): an Idempotency-Key reused, turn_policy reject

    @extend_schema(
        description=(
            "Accept one input (committed before the 200). In a conversation whose `responder` is not `none`, or"
            " when `content` is a direct expert call `/<expert> <tool> <json object>` (in any conversation), the"
            " input also starts an assistant turn: the 200 carries `turn_id`, and the turn's events follow on"
            " every participant's streams (`assistant.started`, `assistant.delta`, `tool.call`, `tool.result`,"
            " then one of `assistant.completed`, `assistant.failed`, `assistant.cancelled`). A direct call is"
            " recognised by its shape only: arguments that are not valid JSON, or an expert the workspace does"
            " not have, end the turn as `assistant.failed` with the reason (`invalid_input`, `not_found`) rather"
            " than refusing the input, which is stored like any message."
        ),
        request=InputSerializer,
        responses={200: InputResponseSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Retries with the same key and body within 24 h return the first response.",
            )
        ],
    )
    async def post(self, request: AuthenticatedRequest) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 255):
            raise serializers.ValidationError({"Idempotency-Key": ["Must be 1 to 255 characters."]})
        data = validated(InputSerializer, request.data)
        return Response(
            await self._commit(request.user, data["content"], data["conversation_id"], data["metadata"], key)
        )

    async def lean(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        """The common input (see `AsyncAPIView.lean`): a bearer token, a JSON body `InputBody`
        accepts, a valid Idempotency-Key if any. DRF's checks run in its order (authentication,
        `IsAuthenticated`, the throttle, then the body), except that the body is read before the
        throttle counts the request: reading it changes nothing, so whatever is refused (the
        throttle included) is answered by DRF's path as before."""
        if request.method != "POST" or not settings.CORTEX["INPUT_LEAN_PATH"] or not self.lean_serves(request):
            return None
        key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None and not (0 < len(key) <= 255):
            return None
        user = await self.lean_user(request)
        if user is None:
            return None
        body = input_body_lean(request.body)
        if body is None or self.lean_throttled(request):
            return None
        try:
            response = await self._commit(user, body.content, body.conversation_id, body.metadata, key)
        except Exception as exc:  # noqa: BLE001 - the write refused it (404, 409, 400): DRF's error answer
            return await self.lean_error(request, user, exc)
        return self.lean_response(response)

    @staticmethod
    async def _commit(user: Any, content: str, conversation_id: Any, metadata: dict, key: str | None) -> Any:
        # Queued for the process's writer thread (group commit); answered after the commit.
        with tracing.span("cortex.input.commit"):
            response, _created = await writer.submit(
                services.InputRequest(
                    sender=user,
                    content=content,
                    conversation_id=conversation_id,
                    metadata=metadata,
                    idempotency_key=key,
                    trace=tracing.traceparent(),
                )
            )
        return response


class MessageListApi(APIView):
    @extend_schema(
        parameters=[MessageListQuerySerializer],
        responses={
            200: inline_serializer(
                "MessagePage",
                {"messages": MessageOutputSerializer(many=True), "next_before": serializers.UUIDField(allow_null=True)},
            )
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        query = validated(MessageListQuerySerializer, request.query_params)
        conversation = selectors.conversation_get_for_user(user=request.user, conversation_id=query["conversation_id"])
        before = None
        if "before" in query:
            try:
                before = selectors.message_get_in_conversation(conversation=conversation, message_id=query["before"])
            except Http404:
                raise serializers.ValidationError({"before": ["No such message in this conversation."]}) from None
        messages = selectors.message_list(conversation=conversation, before=before, limit=query["limit"])
        next_before = str(messages[-1].id) if len(messages) == query["limit"] else None
        return Response({"messages": MessageOutputSerializer(messages, many=True).data, "next_before": next_before})
