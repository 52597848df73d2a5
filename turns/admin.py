from django.contrib import admin

from common.admin import ReadOnlyAdmin
from turns.models import Turn


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    """For inspection: turns change only through their worker and the cancel API (a turn goes with
    its conversation or its input)."""

    list_display = ("id", "kind", "status", "conversation", "user", "created_at", "attempts", "lease_owner")
    list_filter = ("status", "kind", "created_at")
    search_fields = ("id", "conversation__id", "user__email", "lease_owner")
    list_select_related = ("conversation", "user")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Turn._meta.fields]
