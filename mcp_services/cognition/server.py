"""The cognition service: context for a user, read from memory through one long-lived MCP client."""

import logging
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field

from common.errors import CortexError
from mcp_services.client import ServiceClient
from mcp_services.memory.schemas import Query, max_limit
from mcp_services.serving import CortexMCPServer

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
    ) -> dict[str, Any]:
        """Context items for a user: the newest without a query; with one, memory's hybrid search
        (meaning and words, with a small boost for recent items), best first.

        If memory cannot be read, the context is empty and `error` says why.
        """
        user, count = user_id, limit
        conversation = str(conversation_id) if conversation_id else None
        query = query.strip() if query else None
        answer: dict[str, Any] = {"context": [], "user_id": str(user), "query": query, "count": 0}
        try:
            if query:
                arguments: dict[str, Any] = {"user_id": str(user), "query": query, "limit": count, "mode": "hybrid"}
                if conversation:
                    arguments["conversation_id"] = conversation
                found = await memory.call_tool("search_memory", arguments)
                context = found["items"]
            elif conversation:
                context = await memory.read_json(f"history/{user}/conversation/{conversation}/limit/{count}")
            else:
                context = await memory.read_json(f"history/{user}/limit/{count}")
        except CortexError as exc:
            logger.warning("get_context for %s: memory failed: %s", user, exc)
            return {**answer, "error": exc.message}
        return {**answer, "context": context, "count": len(context)}

    return server
