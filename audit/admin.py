from django.contrib import admin

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers too: nobody edits or deletes the record."""

    list_display = ("id", "at", "action", "actor_id", "ip", "target")
    list_filter = ("action", "at")
    search_fields = ("=actor_id", "action", "target")
    date_hierarchy = "at"
    actions = None
    readonly_fields = [field.name for field in AuditEntry._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
