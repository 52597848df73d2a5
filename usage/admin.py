from django.contrib import admin

from common.admin import ReadOnlyAdmin
from usage.models import TurnUsage, UsageTotal, UserBudget


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    """Per-user overrides of USER_MONTHLY_TOKENS (0: no budget for that person)."""

    list_display = ("user", "monthly_tokens")
    search_fields = ("user__email",)
    autocomplete_fields = ("user",)


@admin.register(UsageTotal)
class UsageTotalAdmin(ReadOnlyAdmin):
    list_display = ("scope", "owner_id", "period", "tokens", "turns", "warned")
    list_filter = ("scope", "period")
    search_fields = ("owner_id",)


@admin.register(TurnUsage)
class TurnUsageAdmin(ReadOnlyAdmin):
    list_display = (
        "turn_id",
        "user",
        "model",
        "input_tokens",
        "output_tokens",
        "tool_calls",
        "duration_ms",
        "created_at",
    )
    list_filter = ("model", "created_at")
    search_fields = ("turn_id", "user__email")
    list_select_related = ("user",)
