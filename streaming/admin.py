from django.contrib import admin

from streaming.models import Event, EventBody, EventCursor, StreamTicket


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "recipient", "seq", "body", "conversation", "created_at"]
    list_filter = ["body__type", "created_at"]
    search_fields = ["recipient__email", "=recipient__id", "=conversation__id", "=body__message__id"]
    list_select_related = ["recipient", "body"]
    raw_id_fields = ["recipient", "conversation", "body"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    readonly_fields = ["recipient", "seq", "body", "conversation", "created_at"]


@admin.register(EventBody)
class EventBodyAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "message", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["=message__id"]
    raw_id_fields = ["message"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    readonly_fields = ["type", "message", "payload", "created_at"]


@admin.register(EventCursor)
class EventCursorAdmin(admin.ModelAdmin):
    list_display = ["user", "last_seq", "pruned_through"]
    search_fields = ["user__email", "=user__id"]
    raw_id_fields = ["user"]
    readonly_fields = ["last_seq", "pruned_through"]


@admin.register(StreamTicket)
class StreamTicketAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "created_at", "expires_at"]
    list_filter = ["expires_at"]
    search_fields = ["user__email", "=user__id"]
    raw_id_fields = ["user"]
    readonly_fields = ["user", "ticket_hash", "expires_at", "created_at"]
