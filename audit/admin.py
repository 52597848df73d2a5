from django.contrib import admin

from audit.models import AuditEntry
from common.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers too: nobody edits or deletes the record."""

    list_display = ("id", "at", "action", "actor_id", "ip", "target")
    list_filter = ("action", "at")
    search_fields = ("=actor_id", "action", "target")
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditEntry._meta.fields]
