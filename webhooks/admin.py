from django.contrib import admin

from common.admin import ReadOnlyAdmin
from webhooks.models import Delivery, Webhook


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    """For inspection: the secret is never shown (owners manage webhooks through the API)."""

    list_display = ("id", "owner", "url", "active", "failing_since", "next_attempt_at", "lease_owner")
    list_filter = ("active",)
    search_fields = ("id", "owner__email", "url")
    list_select_related = ("owner",)
    exclude = ("secret",)
    readonly_fields = [field.name for field in Webhook._meta.fields if field.name != "secret"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """The delivery log: pending, delivered and failed deliveries with their last error."""

    list_display = ("id", "webhook", "event_seq", "type", "status", "attempts", "last_status_code", "next_attempt_at")
    list_filter = ("status", "type")
    search_fields = ("id", "webhook__id", "webhook__owner__email")
    list_select_related = ("webhook",)
    readonly_fields = [field.name for field in Delivery._meta.fields]
