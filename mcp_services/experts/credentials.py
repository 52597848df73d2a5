"""Experts behind each person's own OAuth account (`auth: "oauth"`): what the core's side of experts
needs from the `connections` app, which sits above it (it uses the host policy and the expert
registration) and plugs itself in at start (`connections.apps`).

    broker().bearer(expert_id, user_id)                 # the requester's access token, refreshed if due
    broker().bearer(expert_id, user_id, stale=token)    # after a 401: refreshed once (unless already)
    broker().setup(url=..., options={...}, previous=expert.oauth)  # discovery and registration

A person who has not connected their account, whose refresh was refused, or whose token lacks a
scope gets `ExpertNeedsConnection`: a turn asks them to connect (`turns.responders`).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol


class ExpertNeedsConnection(Exception):
    """The requester's account at the expert's authorization server is not usable for this call:
    `reason` is "not_connected", "needs_reconsent" (a refresh was refused) or "insufficient_scope"
    (`scopes`: what to ask for, with the scopes already granted)."""

    def __init__(self, expert_id: uuid.UUID, expert: str, scopes: list[str], reason: str = "not_connected") -> None:
        super().__init__(f"{expert}: {reason}")
        self.expert_id, self.expert, self.scopes, self.reason = expert_id, expert, scopes, reason


class Broker(Protocol):
    async def bearer(self, expert_id: uuid.UUID, user_id: uuid.UUID, *, stale: str | None = None) -> str: ...

    async def step_up(self, expert_id: uuid.UUID, user_id: uuid.UUID, scopes: list[str]) -> list[str]: ...

    def setup(self, *, url: str, options: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]: ...


_broker: Broker | None = None


def broker_set(value: Broker) -> None:
    global _broker
    _broker = value


def broker() -> Broker:
    if _broker is None:  # pragma: no cover - the connections app is installed with the core
        raise RuntimeError("No OAuth broker: the `connections` app is not installed.")
    return _broker
