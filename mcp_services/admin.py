from typing import cast

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from mcp_services.models import MemoryItem, OutboxEntry, OutboxEntryQuerySet


@admin.register(MemoryItem)
class MemoryItemAdmin(admin.ModelAdmin):
    list_display = ("item_id", "user_id", "conversation_id", "short_content", "timestamp", "stored_at")
    list_filter = ("timestamp", "stored_at")
    search_fields = ("=user_id", "=item_id", "=conversation_id", "content")
    readonly_fields = ("user_id", "item_id", "conversation_id", "content", "data", "timestamp", "stored_at")
    date_hierarchy = "timestamp"
    ordering = ("-timestamp", "-id")

    @admin.display(description="content")
    def short_content(self, obj: MemoryItem) -> str:
        return obj.content[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # items come from store_input, which the outbox feeds


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("pending", "pending"),
            ("retrying", "pending, failed before"),
            ("in_flight", "claimed by a drainer"),
            ("delivered", "delivered"),
            ("failed", "refused (needs an operator)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OutboxEntry]) -> QuerySet[OutboxEntry]:
        entries = cast(OutboxEntryQuerySet, queryset)  # the model's manager: the admin's queryset
        match self.value():
            case "pending":
                return entries.pending()
            case "retrying":
                return entries.pending().filter(attempts__gt=0)
            case "in_flight":
                return entries.pending().filter(claimed_until__gt=timezone.now())
            case "delivered":
                return queryset.filter(delivered_at__isnull=False)
            case "failed":
                return queryset.filter(failed_at__isnull=False)
        return queryset


@admin.register(OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "user_id",
        "state",
        "attempts",
        "next_attempt_at",
        "short_error",
        "created_at",
        "delivered_at",
    )
    list_filter = (OutboxStateFilter, "kind", "created_at")
    search_fields = ("=user_id", "=message_id", "=conversation_id", "last_error")
    readonly_fields = [field.name for field in OutboxEntry._meta.fields]
    date_hierarchy = "created_at"
    ordering = ("-id",)
    actions = ["retry_now"]

    @admin.display(description="state")
    def state(self, obj: OutboxEntry) -> str:
        if obj.delivered_at:
            return "delivered"
        if obj.failed_at:
            return "refused"
        if obj.claimed_until and obj.claimed_until > timezone.now():
            return "in flight"
        return "retrying" if obj.attempts else "pending"

    @admin.display(description="last error")
    def short_error(self, obj: OutboxEntry) -> str:
        return obj.last_error[:80]

    @admin.action(description="Retry now (also refused entries)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxEntry]) -> None:
        count = queryset.filter(delivered_at__isnull=True).update(
            next_attempt_at=timezone.now(), failed_at=None, claimed_until=None
        )
        self.message_user(request, f"{count} entries will be sent on the next drain.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
