"""The cognition service: context for a user, read from memory through one long-lived MCP client."""

import logging
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from pydantic import Field

from common.errors import CortexError
from mcp_services.client import ServiceClient
from mcp_services.memory.schemas import Query, max_limit
from mcp_services.serving import CortexMCPServer

logger = logging.getLogger(__name__)

# With a query: relevance dominates, recency breaks near-ties (a fresh mention beats a stale one
# only when both match about as well).
RELEVANCE_WEIGHT = 0.8
RECENCY_WEIGHT = 0.2
CANDIDATE_FACTOR = 5


def _moment(item: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(item.get("timestamp"))).timestamp()
    except ValueError:
        return 0.0


def blend(items: list[dict[str, Any]], relevance: list[float], limit: int) -> list[dict[str, Any]]:
    """Order search results by relevance blended with recency (newest = 1, oldest = 0)."""
    if not items:
        return []
    by_age = sorted(range(len(items)), key=lambda index: _moment(items[index]))
    recency = [0.0] * len(items)
    for position, index in enumerate(by_age):
        recency[index] = position / (len(items) - 1) if len(items) > 1 else 1.0
    scores = [RELEVANCE_WEIGHT * relevance[i] + RECENCY_WEIGHT * recency[i] for i in range(len(items))]
    order = sorted(range(len(items)), key=lambda index: scores[index], reverse=True)
    return [items[index] for index in order[:limit]]


def candidate_count(limit: int) -> int:
    """Search results to blend for `limit` context items: bounded, whatever `limit` asks for."""
    cortex = settings.CORTEX
    return max(limit, min(limit * CANDIDATE_FACTOR, cortex["CONTEXT_MAX_CANDIDATES"], cortex["MEMORY_MAX_LIMIT"]))


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
    ) -> dict[str, Any]:
        """Context items for a user: the newest without a query; with one, relevance blended with recency.

        If memory cannot be read, the context is empty and `error` says why.
        """
        user, count = user_id, limit
        conversation = str(conversation_id) if conversation_id else None
        query = query.strip() if query else None
        answer: dict[str, Any] = {"context": [], "user_id": str(user), "query": query, "count": 0}
        try:
            if query:
                wanted = candidate_count(count)
                arguments: dict[str, Any] = {"user_id": str(user), "query": query, "limit": wanted}
                if conversation:
                    arguments["conversation_id"] = conversation
                found = await memory.call_tool("search_memory", arguments)
                context = blend(found["items"], found.get("scores") or [1.0] * len(found["items"]), count)
            elif conversation:
                context = await memory.read_json(f"history/{user}/conversation/{conversation}/limit/{count}")
            else:
                context = await memory.read_json(f"history/{user}/limit/{count}")
        except CortexError as exc:
            logger.warning("get_context for %s: memory failed: %s", user, exc)
            return {**answer, "error": exc.message}
        return {**answer, "context": context, "count": len(context)}

    return server
