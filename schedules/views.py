"""`/schedules`: parse, authorize (the owner only; the conversation by the one membership rule),
call one service."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

import audit
from common.web.addresses import client_address
from common.web.requests import AuthenticatedRequest
from common.web.throttles import WriteRateThrottle
from common.web.views import validated
from schedules import selectors, services
from schedules.models import Schedule
from workspaces.selectors import conversation_get_for_user
from workspaces.serializers import StrictCharField


class ScheduleSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    content = serializers.CharField()
    cron = serializers.CharField(help_text="5 fields: minute hour day-of-month month day-of-week.")
    timezone = serializers.CharField(help_text="An IANA name (`Europe/Berlin`): local time, DST included.")
    active = serializers.BooleanField()
    next_run_at = serializers.CharField(allow_null=True, help_text="UTC; null while inactive.")
    last_run_at = serializers.CharField(allow_null=True)
    last_input_id = serializers.UUIDField(allow_null=True)
    paused_reason = serializers.CharField(allow_null=True, help_text="Why the system paused it, if it did.")
    created_at = serializers.CharField()


class ScheduleInputSerializer(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    content = StrictCharField(trim_whitespace=False)
    cron = StrictCharField(max_length=120)
    timezone = StrictCharField(max_length=64)
    active = serializers.BooleanField(default=True)


class SchedulePatchSerializer(serializers.Serializer):
    conversation_id = serializers.UUIDField(required=False)
    content = StrictCharField(trim_whitespace=False, required=False)
    cron = StrictCharField(max_length=120, required=False)
    timezone = StrictCharField(max_length=64, required=False)
    active = serializers.BooleanField(required=False)


_One = inline_serializer("ScheduleOne", {"schedule": ScheduleSerializer()})


class _ScheduleApi(APIView):
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "schedules"  # per user, writes only


class ScheduleListApi(_ScheduleApi):
    error_statuses = (409,)

    @extend_schema(
        operation_id="schedules_list",
        responses={200: inline_serializer("ScheduleList", {"schedules": ScheduleSerializer(many=True)})},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response({"schedules": [selectors.schedule_data(s) for s in selectors.schedule_list(user=request.user)]})

    @extend_schema(
        operation_id="schedules_create",
        request=ScheduleInputSerializer,
        description=(
            "Participants of the conversation only (else 404). A bad cron or timezone is a 400 with `fields`;"
            " at most `SCHEDULES_PER_USER` (409 `conflict` beyond) and no two runs closer than"
            " `SCHEDULE_MIN_INTERVAL_SECONDS` (400). When due, `content` is posted as an input of the owner"
            " with `metadata.schedule_id`."
        ),
        responses={201: _One},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(ScheduleInputSerializer, request.data)
        conversation = conversation_get_for_user(user=request.user, conversation_id=data["conversation_id"])
        with transaction.atomic():
            schedule = services.schedule_create(
                owner=request.user,
                conversation=conversation,
                content=data["content"],
                cron_expression=data["cron"],
                timezone_name=data["timezone"],
                active=data["active"],
            )
            _audit(request, "schedule.created", schedule, {"cron": schedule.cron, "timezone": schedule.timezone})
        return Response({"schedule": selectors.schedule_data(schedule)}, status=status.HTTP_201_CREATED)


class ScheduleDetailApi(_ScheduleApi):
    @extend_schema(operation_id="schedules_get", responses={200: _One})
    def get(self, request: AuthenticatedRequest, schedule_id: str) -> Response:
        schedule = selectors.schedule_get_for_user(user=request.user, schedule_id=schedule_id)
        return Response({"schedule": selectors.schedule_data(schedule)})

    @extend_schema(
        operation_id="schedules_update",
        request=SchedulePatchSerializer,
        description="A new cron, timezone or `active: true` computes the next run again from now.",
        responses={200: _One},
    )
    def patch(self, request: AuthenticatedRequest, schedule_id: str) -> Response:
        schedule = selectors.schedule_get_for_user(user=request.user, schedule_id=schedule_id)
        data = validated(SchedulePatchSerializer, request.data)
        conversation = None
        if "conversation_id" in data:
            conversation = conversation_get_for_user(user=request.user, conversation_id=data.pop("conversation_id"))
        schedule = services.schedule_update(schedule=schedule, conversation=conversation, **data)
        return Response({"schedule": selectors.schedule_data(schedule)})

    @extend_schema(operation_id="schedules_delete", responses={204: None})
    def delete(self, request: AuthenticatedRequest, schedule_id: str) -> Response:
        schedule = selectors.schedule_get_for_user(user=request.user, schedule_id=schedule_id)
        with transaction.atomic():
            _audit(request, "schedule.deleted", schedule, {})
            services.schedule_delete(schedule=schedule)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScheduleRunApi(_ScheduleApi):
    error_statuses = (409,)

    @extend_schema(
        operation_id="schedules_run",
        request=None,
        description=(
            "Post the schedule's content once, now, as the owner's input (its turn runs as for any input;"
            " the schedule's timing is unchanged). 404 when the owner no longer takes part in its"
            " conversation."
        ),
        responses={
            202: inline_serializer(
                "ScheduleRun",
                {
                    "status": serializers.CharField(),
                    "input_id": serializers.UUIDField(),
                    "turn_id": serializers.UUIDField(required=False),
                },
            )
        },
    )
    def post(self, request: AuthenticatedRequest, schedule_id: str) -> Response:
        schedule = selectors.schedule_get_for_user(user=request.user, schedule_id=schedule_id)
        conversation_get_for_user(user=request.user, conversation_id=schedule.conversation_id)
        response = services.schedule_run_now(schedule=schedule)
        body = {"status": "accepted", "input_id": response["data"]["id"]}
        if "turn_id" in response:
            body["turn_id"] = response["turn_id"]
        return Response(body, status=status.HTTP_202_ACCEPTED)


def _audit(request: AuthenticatedRequest, action: str, schedule: Schedule, detail: dict) -> None:
    """What may act for its owner changed (in the change's transaction)."""
    audit.record(request.user, action, ip=client_address(request._request), target=str(schedule.id), detail=detail)
