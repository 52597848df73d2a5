"""Connections in the admin: who is connected to which expert, never a token; removable (the
delete revokes at the server first)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from connections import services
from connections.models import Connection, OAuthClient


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("user", "expert", "issuer", "status", "scopes", "connected_at", "expires_at", "refreshes")
    list_filter = ("status",)
    fields = ("user", "expert", "issuer", "status", "scopes", "connected_at", "expires_at", "refreshed_at", "refreshes")
    readonly_fields = fields

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: Any, obj: Connection) -> None:
        services.revoke_and_delete([obj])

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        services.revoke_and_delete(list(queryset.select_related("expert", "client")))


@admin.register(OAuthClient)
class OAuthClientAdmin(admin.ModelAdmin):
    list_display = ("issuer", "client_id", "registration", "token_endpoint_auth_method", "created_at")
    fields = ("issuer", "client_id", "registration", "token_endpoint_auth_method", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: Any) -> bool:
        return False
