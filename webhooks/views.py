"""`/webhooks`: parse, authorize (the owner only), call one service."""

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
from webhooks import policy, selectors, services
from webhooks.models import Webhook
from workspaces.serializers import StrictCharField


class _UrlField(serializers.URLField):
    """A webhook URL: a host WEBHOOK_ALLOWED_HOSTS allows, https outside debug (else 400)."""

    def to_internal_value(self, data):
        url = super().to_internal_value(data)
        refusal = policy.url_refusal(url)
        if refusal is not None:
            raise serializers.ValidationError(refusal, code="host_not_allowed")
        return url


class WebhookSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    active = serializers.BooleanField()
    disabled_reason = serializers.CharField(allow_null=True, help_text="Why the system deactivated it, if it did.")
    failing_since = serializers.CharField(allow_null=True, help_text="Since when every attempt has failed.")
    created_at = serializers.CharField()


class DeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.CharField(help_text="The event's id in the owner's log, sent as `webhook-id`.")
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "delivered", "failed"])
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = serializers.CharField(allow_null=True)
    created_at = serializers.CharField()
    finished_at = serializers.CharField(allow_null=True)


_EVENTS_HELP = 'Event types of your log to deliver (`assistant.completed`, `approval.requested`, ...), or `["*"]`.'


class WebhookInputSerializer(serializers.Serializer):
    url = _UrlField(max_length=2000)
    events = serializers.ListField(
        child=StrictCharField(max_length=64), min_length=1, max_length=50, help_text=_EVENTS_HELP
    )
    description = StrictCharField(max_length=500, required=False, allow_blank=True, default="")


class WebhookPatchSerializer(serializers.Serializer):
    url = _UrlField(max_length=2000, required=False)
    events = serializers.ListField(
        child=StrictCharField(max_length=64), min_length=1, max_length=50, required=False, help_text=_EVENTS_HELP
    )
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class DeliveryQuerySerializer(serializers.Serializer):
    cursor = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=50)


_WithSecret = inline_serializer(
    "WebhookWithSecret", {"webhook": WebhookSerializer(), "secret": serializers.CharField()}
)
_One = inline_serializer("WebhookOne", {"webhook": WebhookSerializer()})


class _WebhookApi(APIView):
    throttle_classes = [WriteRateThrottle]
    throttle_scope = "webhooks"  # per user, writes only


class WebhookListApi(_WebhookApi):
    error_statuses = (409,)

    @extend_schema(
        operation_id="webhooks_list",
        responses={200: inline_serializer("WebhookList", {"webhooks": WebhookSerializer(many=True)})},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response({"webhooks": [selectors.webhook_data(w) for w in selectors.webhook_list(user=request.user)]})

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookInputSerializer,
        description=(
            "The secret (`whsec_...`, Standard Webhooks) is shown only in this answer. Each matching event of"
            " your log is then POSTed at least once, in log order, with `webhook-id` (the event id),"
            " `webhook-timestamp` and `webhook-signature`; body `{type, timestamp, data}`. The URL's host must be"
            " allowed by `WEBHOOK_ALLOWED_HOSTS` and use https outside debug (else 400). At most"
            " `WEBHOOKS_PER_USER` (409)."
        ),
        responses={201: _WithSecret},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(WebhookInputSerializer, request.data)
        with transaction.atomic():
            webhook, secret = services.webhook_create(
                owner=request.user, url=data["url"], events=data["events"], description=data["description"]
            )
            _audit(request, "webhook.created", webhook, {"url": webhook.url, "events": webhook.events})
        return Response({"webhook": selectors.webhook_data(webhook), "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookDetailApi(_WebhookApi):
    @extend_schema(operation_id="webhooks_get", responses={200: _One})
    def get(self, request: AuthenticatedRequest, webhook_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        return Response({"webhook": selectors.webhook_data(webhook)})

    @extend_schema(
        operation_id="webhooks_update",
        request=WebhookPatchSerializer,
        description="`active: true` brings a deactivated webhook back; its pending deliveries are due at once.",
        responses={200: _One},
    )
    def patch(self, request: AuthenticatedRequest, webhook_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        data = validated(WebhookPatchSerializer, request.data)
        webhook = services.webhook_update(webhook=webhook, **data)
        return Response({"webhook": selectors.webhook_data(webhook)})

    @extend_schema(operation_id="webhooks_delete", responses={204: None})
    def delete(self, request: AuthenticatedRequest, webhook_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        with transaction.atomic():
            _audit(request, "webhook.deleted", webhook, {"url": webhook.url})
            services.webhook_delete(webhook=webhook)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(_WebhookApi):
    @extend_schema(
        operation_id="webhooks_rotate_secret",
        request=None,
        description="A new secret, shown only here; the old one signs nothing from now on.",
        responses={200: _WithSecret},
    )
    def post(self, request: AuthenticatedRequest, webhook_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        with transaction.atomic():
            webhook, secret = services.webhook_rotate_secret(webhook=webhook)
            _audit(request, "webhook.secret_rotated", webhook, {})
        return Response({"webhook": selectors.webhook_data(webhook), "secret": secret})


class DeliveryListApi(_WebhookApi):
    @extend_schema(
        operation_id="webhooks_deliveries",
        parameters=[DeliveryQuerySerializer],
        description="Newest first; pass `next_cursor` as `cursor` for the next page.",
        responses={
            200: inline_serializer(
                "DeliveryList",
                {"items": DeliverySerializer(many=True), "next_cursor": serializers.IntegerField(allow_null=True)},
            )
        },
    )
    def get(self, request: AuthenticatedRequest, webhook_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        query = validated(DeliveryQuerySerializer, request.query_params)
        items, following = selectors.deliveries_page(webhook=webhook, cursor=query.get("cursor"), limit=query["limit"])
        return Response({"items": [selectors.delivery_data(item) for item in items], "next_cursor": following})


class DeliveryRetryApi(_WebhookApi):
    @extend_schema(
        operation_id="webhooks_delivery_retry",
        request=None,
        description="Send this delivery again (due now, in its place in log order), whatever its status.",
        responses={202: inline_serializer("DeliveryRetry", {"item": DeliverySerializer()})},
    )
    def post(self, request: AuthenticatedRequest, webhook_id: str, delivery_id: str) -> Response:
        webhook = selectors.webhook_get_for_user(user=request.user, webhook_id=webhook_id)
        delivery = selectors.delivery_get(webhook=webhook, delivery_id=delivery_id)
        delivery = services.delivery_retry(delivery=delivery)
        return Response({"item": selectors.delivery_data(delivery)}, status=status.HTTP_202_ACCEPTED)


def _audit(request: AuthenticatedRequest, action: str, webhook: Webhook, detail: dict) -> None:
    """What may act for its owner changed (in the change's transaction)."""
    audit.record(request.user, action, ip=client_address(request._request), target=str(webhook.id), detail=detail)
