"""The `mcp_services.experts.credentials.Broker` the core's expert calls use (set at start, by every
Django process: `connections.services` and its OAuth client are imported by the first call)."""

from __future__ import annotations

import uuid
from typing import Any

from common.db import db_call


class OAuthBroker:
    async def bearer(self, expert_id: uuid.UUID, user_id: uuid.UUID, *, stale: str | None = None) -> str:
        from connections import services

        return await db_call(services.bearer)(expert_id=expert_id, user_id=user_id, stale=stale)

    async def step_up(self, expert_id: uuid.UUID, user_id: uuid.UUID, scopes: list[str]) -> list[str]:
        from connections import services

        return await db_call(services.step_up)(expert_id=expert_id, user_id=user_id, scopes=scopes)

    def setup(self, *, url: str, options: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        from connections import services

        return services.setup(url=url, options=options, previous=previous)
