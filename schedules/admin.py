from django.contrib import admin, messages

from common.admin import ReadOnlyAdmin
from schedules import services
from schedules.models import Schedule


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyAdmin):
    """For inspection; an operator can pause schedules (their owner resumes them through the API),
    through the service, so `next_run_at` stays consistent."""

    list_display = ("id", "owner", "cron", "timezone", "active", "next_run_at", "last_run_at", "paused_reason")
    list_filter = ("active", "timezone")
    search_fields = ("id", "owner__email", "conversation__id", "cron")
    list_select_related = ("owner",)
    readonly_fields = [field.name for field in Schedule._meta.fields]
    actions = ["pause"]  # type: ignore[assignment]  # ReadOnlyAdmin has none; this one action goes through the service

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser  # for the action; every field stays read-only

    @admin.action(description="Pause the selected schedules")
    def pause(self, request, queryset) -> None:
        for schedule in queryset:
            services.schedule_update(schedule=schedule, active=False)
        self.message_user(request, f"Paused {queryset.count()} schedules.", messages.SUCCESS)
