"""The cognition service: context for a user, read from memory through one long-lived MCP client."""

import asyncio
import logging
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field

from common.errors import CortexError
from mcp_services.client import ServiceClient
from mcp_services.memory.schemas import Query, max_limit
from mcp_services.serving import CortexMCPServer

MAX_PARTICIPANTS = 100  # as a conversation's (MAX_PARTICIPANTS' default); one memory read each

logger = logging.getLogger(__name__)


def build_cognition_server(*, memory: ServiceClient, **auth: Any) -> CortexMCPServer:
    server = CortexMCPServer(
        "CortexCognition",
        instructions="Context for a user: newest memory items, or the most relevant ones for a query.",
        **auth,
    )

    most = max_limit()

    @server.tool()
    async def get_context(
        user_id: UUID,
        query: Query | None = None,
        limit: Annotated[int, Field(ge=1, le=most)] = 10,
        conversation_id: UUID | None = None,
        participant_ids: Annotated[list[UUID], Field(max_length=MAX_PARTICIPANTS)] | None = None,
    ) -> dict[str, Any]:
        """Context items for a user: the newest without a query; with one, memory's hybrid search
        (meaning and words, with a small boost for recent items), best first.

        With `conversation_id`, only items that came from that conversation; with `participant_ids`
        too, from the memory of each of those users (and `user_id`'s), merged: what a turn in a
        shared conversation may read. Each item then names its owner in `user_id`.

        If memory cannot be read, the context is empty and `error` says why.
        """
        user, count = user_id, limit
        conversation = str(conversation_id) if conversation_id else None
        query = query.strip() if query else None
        answer: dict[str, Any] = {"context": [], "user_id": str(user), "query": query, "count": 0}
        owners = [user]
        if conversation and participant_ids:
            owners += [owner for owner in dict.fromkeys(participant_ids) if owner != user]
        try:
            found = await asyncio.gather(*(_items(owner, query, count, conversation) for owner in owners))
        except CortexError as exc:
            logger.warning("get_context for %s: memory failed: %s", user, exc)
            return {**answer, "error": exc.message}
        if len(owners) == 1:
            context = [item for item, _ in found[0]]
        else:  # best first (by score, or newest without a query), each item with its owner
            merged = [
                (rank, {**item, "user_id": str(owner)})
                for owner, items in zip(owners, found, strict=True)
                for item, rank in items
            ]
            context = [item for _, item in sorted(merged, key=lambda pair: pair[0], reverse=True)[:count]]
        return {**answer, "context": context, "count": len(context)}

    async def _items(owner: UUID, query: str | None, count: int, conversation: str | None) -> list[tuple[Any, Any]]:
        """One user's items with what orders them across users: the score, or the timestamp."""
        if query:
            arguments: dict[str, Any] = {"user_id": str(owner), "query": query, "limit": count, "mode": "hybrid"}
            if conversation:
                arguments["conversation_id"] = conversation
            found = await memory.call_tool("search_memory", arguments)
            return list(zip(found["items"], found.get("scores") or [0.0] * len(found["items"]), strict=False))
        path = (
            f"history/{owner}/conversation/{conversation}/limit/{count}"
            if conversation
            else f"history/{owner}/limit/{count}"
        )
        return [(item, str(item.get("timestamp", ""))) for item in await memory.read_json(path)]

    return server
