"""The memory service: the guide's MCP API, persisted with the Django ORM.

Tools parse their arguments, call one service or selector, and shape the answer; a refused
argument is a `ToolError` whose message starts with the stable code (`invalid_input: ...`).
"""

from __future__ import annotations

import uuid
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from mcp_services import selectors, services
from mcp_services.servers.common import db_call, may_write
from mcp_services.services import MemoryInputError

MAX_QUERY_CHARS = 1000
MAX_BATCH_ITEMS = 1000


def _user(user_id: object) -> uuid.UUID:
    try:
        return services.parse_user_id(user_id)
    except MemoryInputError as exc:
        raise ToolError(str(exc)) from None


def _limit(limit: object) -> int:
    try:
        return services.parse_limit(limit)
    except MemoryInputError as exc:
        raise ToolError(str(exc)) from None


def _optional_text(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise ToolError(f"invalid_input: {name} must be a string of at most 255 characters.")
    return value


def _require_write() -> None:
    if not may_write():
        raise ToolError("forbidden: this credential may only read memory (search and history).")


def _resource_args(user_id: str, limit: int | None = None) -> tuple[uuid.UUID, int | None]:
    try:
        return services.parse_user_id(user_id), None if limit is None else services.parse_limit(limit)
    except MemoryInputError as exc:
        raise ResourceError(str(exc)) from None


def build_memory_server(**auth: Any) -> MCPServer:
    """`auth`: `token_verifier=` and `auth=` from `common.auth_options` (none in-process)."""
    server = MCPServer(
        "CortexMemory",
        instructions="Per-user memory of Cortex inputs: store, history, full-text search, delete.",
        **auth,
    )

    @server.tool()
    async def store_input(user_id: str, input_data: dict[str, Any]) -> dict[str, Any]:
        """Store one input for a user. Idempotent on input_data["id"]: a retry stores nothing new."""
        _require_write()
        user = _user(user_id)
        try:
            item, _created = await db_call(services.memory_item_store)(user_id=user, input_data=input_data)
        except MemoryInputError as exc:
            raise ToolError(str(exc)) from None
        return {"status": "stored", "user_id": str(user), "item_id": item.item_id}

    @server.tool()
    async def store_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store many inputs at once: `items` is a list of `{"user_id", "input_data"}`, each stored as
        `store_input` would (idempotent on input_data["id"]). `results[i]` answers `items[i]`:
        `status` "stored", "duplicate" (a retry; nothing stored) or "invalid" (with `error`)."""
        if not isinstance(items, list) or len(items) > MAX_BATCH_ITEMS:
            raise ToolError(f"invalid_input: items must be a list of at most {MAX_BATCH_ITEMS} objects.")
        parsed: list[tuple[uuid.UUID, object]] = []
        refused: dict[int, str] = {}
        for index, entry in enumerate(items):
            try:
                if not isinstance(entry, dict):
                    raise MemoryInputError("each item must be an object with user_id and input_data.")
                parsed.append((services.parse_user_id(entry.get("user_id")), entry.get("input_data")))
            except MemoryInputError as exc:
                refused[index] = str(exc)
        stored = iter(await db_call(services.memory_items_store)(items=parsed))
        results = [
            {"item_id": None, "status": "invalid", "error": refused[index]} if index in refused else next(stored)
            for index in range(len(items))
        ]
        return {"stored": sum(result["status"] == "stored" for result in results), "results": results}

    @server.tool()
    async def search_memory(
        user_id: str, query: str, limit: int = 10, conversation_id: str | None = None
    ) -> dict[str, Any]:
        """The user's items matching the query by full-text relevance, best first.

        `scores` holds each item's relevance in (0, 1], relative to the best match.
        """
        user = _user(user_id)
        count = _limit(limit)
        if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"invalid_input: query must be a string of at most {MAX_QUERY_CHARS} characters.")
        conversation = _optional_text(conversation_id, "conversation_id")
        found = await db_call(selectors.memory_search)(
            user_id=user, query=query, limit=count, conversation_id=conversation
        )
        return {"items": [item for item, _ in found], "scores": [round(score, 6) for _, score in found]}

    @server.tool()
    async def delete_memory(
        user_id: str, item_id: str | None = None, conversation_id: str | None = None, everything: bool = False
    ) -> dict[str, Any]:
        """Delete one item (item_id), a conversation's items (conversation_id), their intersection,
        or every item of the user (everything=true: the user was deleted)."""
        _require_write()
        user = _user(user_id)
        item = _optional_text(item_id, "item_id")
        conversation = _optional_text(conversation_id, "conversation_id")
        if not isinstance(everything, bool):
            raise ToolError("invalid_input: everything must be a boolean.")
        try:
            deleted = await db_call(services.memory_item_delete)(
                user_id=user, item_id=item, conversation_id=conversation, everything=everything
            )
        except MemoryInputError as exc:
            raise ToolError(str(exc)) from None
        return {"deleted": deleted}

    @server.resource("history/{user_id}", mime_type="application/json")
    async def history(user_id: str) -> list[dict[str, Any]]:
        """The user's items, oldest first."""
        user, _ = _resource_args(user_id)
        return await db_call(selectors.memory_history)(user_id=user)

    @server.resource("history/{user_id}/limit/{limit}", mime_type="application/json")
    async def limited_history(user_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's newest `limit` items, newest first."""
        user, count = _resource_args(user_id, limit)
        return await db_call(selectors.memory_history)(user_id=user, limit=count)

    @server.resource("history/{user_id}/conversation/{conversation_id}/limit/{limit}", mime_type="application/json")
    async def conversation_history(user_id: str, conversation_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's newest `limit` items of one conversation, newest first."""
        user, count = _resource_args(user_id, limit)
        return await db_call(selectors.memory_history)(user_id=user, limit=count, conversation_id=conversation_id)

    return server
