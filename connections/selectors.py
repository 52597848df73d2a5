"""Reads of connected accounts."""

from __future__ import annotations

import uuid
from typing import Any

from connections.models import Connection
from workspaces.models import Expert
from workspaces.selectors import iso, member_workspace_ids


def oauth_experts_for_user(*, user_id: uuid.UUID) -> list[Expert]:
    """Every `oauth` expert of the workspaces the user takes part in (the experts' one membership rule)."""
    workspace_ids = member_workspace_ids(user_id=user_id)
    return list(
        Expert.objects.filter(auth=Expert.Auth.OAUTH, workspace_id__in=workspace_ids).order_by("created_at", "id")
    )


def oauth_expert_for_user(*, user_id: uuid.UUID, expert_id: str) -> Expert | None:
    try:
        wanted = uuid.UUID(str(expert_id))
    except ValueError:
        return None
    return next((expert for expert in oauth_experts_for_user(user_id=user_id) if expert.id == wanted), None)


def connection_list(*, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The caller's own connection status for each `oauth` expert they may use (never a token)."""
    experts = oauth_experts_for_user(user_id=user_id)
    connections = {c.expert_id: c for c in Connection.objects.filter(user_id=user_id, expert__in=experts)}
    items = []
    for expert in experts:
        connection = connections.get(expert.id)
        items.append(
            {
                "expert_id": str(expert.id),
                "workspace_id": str(expert.workspace_id),
                "expert": expert.name,
                "status": connection.status if connection is not None else "not_connected",
                "scopes": connection.scopes if connection is not None else [],
                "connected_at": iso(connection.connected_at) if connection is not None else None,
                "expires_at": iso(connection.expires_at) if connection and connection.expires_at else None,
            }
        )
    return items
