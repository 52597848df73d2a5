"""`GET /usage`: the caller's own usage, grouped, and their monthly budget."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import CortexError, ErrorCode
from common.web.requests import AuthenticatedRequest
from common.web.views import validated
from usage import selectors


class UsageQuerySerializer(serializers.Serializer):
    # A date is its whole day (UTC): `from` its start, `to` its end; a date-time is that instant.
    from_ = serializers.CharField(required=False, help_text="A date or date-time (default: this month's start, UTC).")
    to = serializers.CharField(required=False, help_text="A date (inclusive) or date-time (exclusive); default: now.")
    group_by = serializers.ChoiceField(choices=selectors.GROUPS, required=False, default="day")

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class UsageItemSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The day (YYYY-MM-DD), workspace id, conversation id or model.")
    turns = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    tool_calls = serializers.IntegerField()


def _instant(value: str | None, *, field: str, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).date() + timedelta(days=1 if end else 0)
            return datetime.combine(day, time.min, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CortexError(
            ErrorCode.INVALID_INPUT, "Not a date or date-time.", fields={field: ["Use YYYY-MM-DD or ISO 8601."]}
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class UsageApi(APIView):
    @extend_schema(
        operation_id="usage",
        description=(
            "The caller's turns between `from` and `to`, grouped by `day` (UTC), `workspace`, `conversation` or"
            ' `model` (tokens as the model reported them; a turn that called no model has model `""`), and'
            " their monthly token budget (`tokens` 0: none) with what this month used so far."
        ),
        parameters=[UsageQuerySerializer],
        responses={
            200: inline_serializer(
                "Usage",
                fields={
                    "items": UsageItemSerializer(many=True),
                    "budget": inline_serializer(
                        "UsageBudget",
                        fields={
                            "period": serializers.CharField(),
                            "tokens": serializers.IntegerField(),
                            "used": serializers.IntegerField(),
                        },
                    ),
                },
            )
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        query = validated(UsageQuerySerializer, request.query_params)
        now = timezone.now()
        start = _instant(query.get("from"), field="from", end=False) or datetime.combine(
            selectors.period_of(now), time.min, tzinfo=UTC
        )
        end = _instant(query.get("to"), field="to", end=True) or now + timedelta(seconds=1)
        items = selectors.usage_summary(user_id=request.user.id, start=start, end=end, group_by=query["group_by"])
        return Response({"items": items, "budget": selectors.user_budget(user_id=request.user.id, now=now)})
