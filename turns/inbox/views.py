"""`GET /inbox` and `POST /inbox/<id>/answer`: parse, authorize (participants see, the requester
answers), call one service."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import CortexError, ErrorCode
from common.web.addresses import client_address
from common.web.requests import AuthenticatedRequest
from common.web.views import validated
from turns.inbox import selectors, services
from turns.inbox.models import InboxRequest


class InboxItemSerializer(serializers.Serializer):
    """The request as its event showed it, and its own fields."""

    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=InboxRequest.Kind.values)
    status = serializers.ChoiceField(choices=InboxRequest.Status.values)
    turn_id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    created_at = serializers.CharField()
    expires_at = serializers.CharField()
    expert = serializers.CharField()
    tool = serializers.CharField(required=False, help_text="Approvals: the tool the turn will call.")
    arguments = serializers.DictField(required=False, help_text="Approvals: exactly what will be sent.")
    message = serializers.CharField(required=False, help_text="Questions: what the expert asks.")
    schema = serializers.DictField(required=False, help_text="Questions in form mode: a flat JSON schema.")
    url = serializers.CharField(required=False, help_text="Questions in URL mode: where to go.")
    connect = serializers.DictField(
        required=False,
        help_text='`connect` questions: `{"expert_id", "expert", "scopes"}`: the requester\'s account at an `oauth`'
        " expert is needed; connecting answers it by itself.",
    )
    answer = serializers.DictField(allow_null=True)
    answered_at = serializers.CharField(allow_null=True)


class AnswerInputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "deny"], required=False, help_text="Approvals.")
    action = serializers.ChoiceField(choices=["accept", "decline", "cancel"], required=False, help_text="Questions.")
    content = serializers.DictField(required=False, help_text="Questions (accept): validated against `schema`.")


def _answer(request: InboxRequest, data: dict[str, Any]) -> dict[str, Any]:
    """The answer the request's kind takes; a question's content must satisfy its schema (400 with
    `fields`, and the request stays open)."""
    if request.kind == InboxRequest.Kind.APPROVAL:
        if "decision" not in data:
            raise CortexError(
                ErrorCode.INVALID_INPUT, "An approval takes a decision.", fields={"decision": ["Required."]}
            )
        return {"decision": data["decision"]}
    if "action" not in data:
        raise CortexError(ErrorCode.INVALID_INPUT, "A question takes an action.", fields={"action": ["Required."]})
    if data["action"] != "accept":
        return {"action": data["action"]}
    schema = request.data.get("schema")
    content = services.schema_defaults_apply(schema, data.get("content") or {})
    if schema is not None:
        # Imported by the first answer to a form: jsonschema is for forms alone (the core's URLconf
        # imports this module, and every process started to serve requests loads the URLconf).
        from common.json_schemas import UnusableSchema, content_errors

        try:
            problems = content_errors(schema, content)
        except UnusableSchema as exc:  # asked before schemas were checked when asked: it can only be declined
            raise CortexError(
                ErrorCode.INVALID_INPUT,
                f"{exc} The question cannot be accepted; decline or cancel it.",
                fields={"content": [str(exc)]},
            ) from None
        if problems:
            raise CortexError(
                ErrorCode.INVALID_INPUT, "The content does not match the question's schema.", fields=problems
            )
    return {"action": "accept", "content": content}


class InboxListApi(APIView):
    @extend_schema(
        operation_id="inbox_list",
        description="The caller's open approvals and questions across their conversations, oldest first.",
        responses={200: inline_serializer("InboxList", {"items": InboxItemSerializer(many=True)})},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response(
            {"items": [selectors.inbox_item(item) for item in selectors.inbox_open_for_user(user=request.user)]}
        )


class InboxAnswerApi(APIView):
    error_statuses = (403, 409)  # for the schema (common.schema)

    @extend_schema(
        operation_id="inbox_answer",
        request=AnswerInputSerializer,
        description=(
            "Answer an approval (`decision`) or a question (`action`, `content`). Only the participant whose"
            " input started the turn may (another participant: 403 `forbidden`; anyone else: 404). Content"
            " that fails the question's schema is a 400 with `fields`, and the question stays open. An"
            " answered or expired request is a 409; of two answers at once exactly one wins."
        ),
        responses={200: inline_serializer("InboxAnswer", {"item": InboxItemSerializer()})},
    )
    def post(self, request: AuthenticatedRequest, request_id: str) -> Response:
        item = selectors.inbox_request_get_for_user(user=request.user, request_id=request_id)
        data = validated(AnswerInputSerializer, request.data)
        if item.user_id != request.user.id:
            raise CortexError(ErrorCode.FORBIDDEN, "Only the participant whose input started the turn can answer.")
        answer = _answer(item, data)
        item = services.inbox_answer(
            request=item, user=request.user, answer=answer, ip=client_address(request._request)
        )
        return Response({"item": selectors.inbox_item(item)})
