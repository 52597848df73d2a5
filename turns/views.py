"""`GET /turns/<id>` and `POST /turns/<id>/cancel`: parse, authorize (participants), call one service."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.web.requests import AuthenticatedRequest
from turns import selectors, services
from turns.models import Turn


class TurnOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    input_id = serializers.UUIDField(source="input_message_id")
    user_id = serializers.UUIDField(help_text="The user whose input started the turn.")
    kind = serializers.ChoiceField(choices=Turn.Kind.values, help_text="`echo`, `llm`, or `direct` (an expert call).")
    status = serializers.ChoiceField(choices=Turn.Status.values)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    cancel_requested = serializers.SerializerMethodField()
    message_id = serializers.UUIDField(source="result_message_id", allow_null=True)
    error = serializers.CharField()

    def get_cancel_requested(self, turn: Turn) -> bool:
        return turn.cancel_requested_at is not None


TurnEnvelope = inline_serializer("TurnEnvelope", {"status": serializers.CharField(), "turn": TurnOutputSerializer()})


class TurnDetailApi(APIView):
    @extend_schema(
        operation_id="turn_get",
        description="An assistant turn, for the participants of its conversation (anyone else: 404).",
        responses={200: TurnEnvelope},
    )
    def get(self, request: AuthenticatedRequest, turn_id: str) -> Response:
        turn = selectors.turn_get_for_user(user=request.user, turn_id=turn_id)
        return Response({"status": "ok", "turn": TurnOutputSerializer(turn).data})


class TurnCancelApi(APIView):
    error_statuses = (409,)  # for the schema (common.schema): the turn has finished

    @extend_schema(
        operation_id="turn_cancel",
        request=None,
        description=(
            "Stop an assistant turn. Any participant of its conversation may (anyone else: 404). 202: a queued"
            " turn is cancelled at once; a running one is stopped by its worker within about"
            " `TURN_POLL_MS` (default 100 ms), keeping what it streamed. Either way the turn's last event is"
            " `assistant.cancelled` (unless it finished first). 409 `conflict`: it has already finished."
        ),
        responses={202: TurnEnvelope},
    )
    def post(self, request: AuthenticatedRequest, turn_id: str) -> Response:
        turn = selectors.turn_get_for_user(user=request.user, turn_id=turn_id)
        turn = services.turn_cancel(turn=turn)
        return Response(
            {"status": "cancel requested", "turn": TurnOutputSerializer(turn).data}, status=status.HTTP_202_ACCEPTED
        )
