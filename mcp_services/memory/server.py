"""The memory service: the guide's MCP API, persisted with the Django ORM.

Tools parse their arguments, call one service or selector, and shape the answer; a refused
argument is a `CortexError`, answered as an error result whose structured content carries the
stable code (`serving.refused_as_result`); resources answer it as a JSON-RPC error with the code in
`data` (`serving.refusal`).
"""

from __future__ import annotations

import uuid
from typing import Any

from mcp.server.mcpserver import MCPServer

from common.errors import CortexError, ErrorCode
from mcp_services.memory import selectors, services
from mcp_services.serving import db_call, may_write, refusal, refused_as_result

MAX_QUERY_CHARS = 1000
MAX_BATCH_ITEMS = 1000


def _optional_text(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise CortexError(ErrorCode.INVALID_INPUT, f"{name} must be a string of at most 255 characters.")
    return value


def _require_write() -> None:
    if not may_write():
        raise CortexError(ErrorCode.PERMISSION_DENIED, "This credential may only read memory (search and history).")


def _resource_args(user_id: str, limit: int | None = None) -> tuple[uuid.UUID, int | None]:
    try:
        return services.parse_user_id(user_id), None if limit is None else services.parse_limit(limit)
    except CortexError as exc:
        raise refusal(exc) from None


def build_memory_server(**auth: Any) -> MCPServer:
    """`auth`: `token_verifier=` and `auth=` from `serving.auth_options` (none in-process)."""
    server = MCPServer(
        "CortexMemory",
        instructions="Per-user memory of Cortex inputs: store, history, full-text search, delete.",
        **auth,
    )

    @server.tool()
    @refused_as_result
    async def store_input(user_id: str, input_data: dict[str, Any]) -> dict[str, Any]:
        """Store one input for a user. Idempotent on input_data["id"]: a retry stores nothing new."""
        _require_write()
        user = services.parse_user_id(user_id)
        item, _created = await db_call(services.memory_item_store)(user_id=user, input_data=input_data)
        return {"status": "stored", "user_id": str(user), "item_id": item.item_id}

    @server.tool()
    @refused_as_result
    async def store_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store many inputs at once: `items` is a list of `{"user_id", "input_data"}`, each stored as
        `store_input` would (idempotent on input_data["id"]). `results[i]` answers `items[i]`:
        `status` "stored", "duplicate" (a retry; nothing stored) or "invalid" (with `code` and `error`)."""
        _require_write()
        if not isinstance(items, list) or len(items) > MAX_BATCH_ITEMS:
            raise CortexError(ErrorCode.INVALID_INPUT, f"items must be a list of at most {MAX_BATCH_ITEMS} objects.")
        parsed: list[tuple[uuid.UUID, object]] = []
        refused: dict[int, CortexError] = {}
        for index, entry in enumerate(items):
            try:
                if not isinstance(entry, dict):
                    raise CortexError(
                        ErrorCode.INVALID_INPUT, "each item must be an object with user_id and input_data."
                    )
                parsed.append((services.parse_user_id(entry.get("user_id")), entry.get("input_data")))
            except CortexError as exc:
                refused[index] = exc
        stored = iter(await db_call(services.memory_items_store)(items=parsed))
        results = [
            {"item_id": None, "status": "invalid", "code": refused[index].code, "error": refused[index].message}
            if index in refused
            else next(stored)
            for index in range(len(items))
        ]
        return {"stored": sum(result["status"] == "stored" for result in results), "results": results}

    @server.tool()
    @refused_as_result
    async def search_memory(
        user_id: str, query: str, limit: int = 10, conversation_id: str | None = None
    ) -> dict[str, Any]:
        """The user's items matching the query by full-text relevance, best first.

        `scores` holds each item's relevance in (0, 1], relative to the best match.
        """
        user = services.parse_user_id(user_id)
        count = services.parse_limit(limit)
        if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
            raise CortexError(
                ErrorCode.INVALID_INPUT, f"query must be a string of at most {MAX_QUERY_CHARS} characters."
            )
        conversation = _optional_text(conversation_id, "conversation_id")
        found = await db_call(selectors.memory_search)(
            user_id=user, query=query, limit=count, conversation_id=conversation
        )
        return {"items": [item for item, _ in found], "scores": [round(score, 6) for _, score in found]}

    @server.tool()
    @refused_as_result
    async def delete_memory(
        user_id: str, item_id: str | None = None, conversation_id: str | None = None, everything: bool = False
    ) -> dict[str, Any]:
        """Delete one item (item_id), a conversation's items (conversation_id), their intersection,
        or every item of the user (everything=true: the user was deleted)."""
        _require_write()
        user = services.parse_user_id(user_id)
        item = _optional_text(item_id, "item_id")
        conversation = _optional_text(conversation_id, "conversation_id")
        if not isinstance(everything, bool):
            raise CortexError(ErrorCode.INVALID_INPUT, "everything must be a boolean.")
        deleted = await db_call(services.memory_item_delete)(
            user_id=user, item_id=item, conversation_id=conversation, everything=everything
        )
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
