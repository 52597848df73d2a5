from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from workspaces import services
from workspaces.models import Conversation, Expert, IdempotencyRecord, Message, Workspace


def _link(obj, label: str | None = None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


class ConversationInline(admin.TabularInline):
    model = Conversation
    fields = ("topic", "created_at")
    readonly_fields = ("topic", "created_at")
    show_change_link = True
    extra = 0
    can_delete = False


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "owner_link", "conversation_count", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "description", "id", "owner__email")
    list_select_related = ("owner",)
    autocomplete_fields = ("owner",)
    readonly_fields = ("id", "created_at", "updated_at")
    inlines = [ConversationInline]

    # Deletes go through the service, as the API's do: events go, memory is purged via the outbox.
    def delete_model(self, request, obj: Workspace) -> None:
        services.workspace_delete(workspace=obj)

    def delete_queryset(self, request, queryset) -> None:
        for workspace in queryset:
            services.workspace_delete(workspace=workspace)

    @admin.display(description="owner", ordering="owner__email")
    def owner_link(self, obj: Workspace) -> str:
        return _link(obj.owner)

    @admin.display(description="conversations")
    def conversation_count(self, obj: Workspace) -> int:
        return obj.conversations.count()


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("topic", "workspace_link", "participant_count", "created_at")
    list_filter = ("created_at",)
    search_fields = ("topic", "id", "workspace__name", "participants__email")
    list_select_related = ("workspace",)
    autocomplete_fields = ("workspace", "participants")
    readonly_fields = ("id", "created_at", "updated_at", "messages_link")

    def delete_model(self, request, obj: Conversation) -> None:
        services.conversation_delete(conversation=obj)

    def delete_queryset(self, request, queryset) -> None:
        for conversation in queryset.select_related("workspace"):
            services.conversation_delete(conversation=conversation)

    @admin.display(description="workspace", ordering="workspace__name")
    def workspace_link(self, obj: Conversation) -> str:
        return _link(obj.workspace)

    @admin.display(description="participants")
    def participant_count(self, obj: Conversation) -> int:
        return obj.participants.count()

    @admin.display(description="messages")
    def messages_link(self, obj: Conversation) -> str:
        url = reverse("admin:workspaces_message_changelist") + f"?conversation__id__exact={obj.pk}"
        return format_html('<a href="{}">{} messages</a>', url, obj.messages.count())


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("short_content", "sender_link", "conversation_link", "created_at")
    list_filter = ("created_at",)
    search_fields = ("content", "id", "sender__email", "conversation__topic")
    list_select_related = ("sender", "conversation")
    raw_id_fields = ("sender", "conversation")
    readonly_fields = ("id", "created_at")
    date_hierarchy = "created_at"

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]

    @admin.display(description="sender", ordering="sender__email")
    def sender_link(self, obj: Message) -> str:
        return _link(obj.sender)

    @admin.display(description="conversation")
    def conversation_link(self, obj: Message) -> str:
        return _link(obj.conversation)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "user", "message", "created_at")
    search_fields = ("key", "user__email")
    list_select_related = ("user", "message")
    raw_id_fields = ("user", "message")
    readonly_fields = ("request_hash", "response", "created_at")


@admin.register(Expert)
class ExpertAdmin(admin.ModelAdmin):
    """Read-only inspection: experts are registered, changed and refreshed by their workspace's owner
    through the API (which checks the URL's host and discovers the tools); deletes use the service."""

    list_display = ("name", "workspace_link", "url", "auth", "status", "tool_count", "discovered_at")
    list_filter = ("status", "auth")
    search_fields = ("name", "url", "id", "workspace__name", "workspace__owner__email")
    list_select_related = ("workspace",)
    readonly_fields = (
        "id",
        "workspace",
        "name",
        "url",
        "auth",
        "allowed_tools",
        "tools",
        "status",
        "last_error",
        "discovered_at",
        "tools_expire_at",
        "created_at",
        "updated_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: Expert) -> None:
        services.expert_delete(expert=obj)

    def delete_queryset(self, request, queryset) -> None:
        for expert in queryset:
            services.expert_delete(expert=expert)

    @admin.display(description="workspace", ordering="workspace__name")
    def workspace_link(self, obj: Expert) -> str:
        return _link(obj.workspace)

    @admin.display(description="tools")
    def tool_count(self, obj: Expert) -> int:
        return len(obj.visible_tools())
