"""The memory service: the guide's MCP API, persisted with the Django ORM.

Tools declare typed arguments (`schemas`): the SDK validates them and publishes the real
`inputSchema`. A tool calls one service or selector and shapes the answer; a refusal (a type that
does not match, or a `CortexError`) is answered as an error result whose structured content carries
the stable code (`serving.CortexMCPServer`); resources answer it as a JSON-RPC error with the code in
`data` (`serving.refusal`).
"""

import uuid
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from common.db import db_call
from common.errors import CortexError, ErrorCode
from mcp_services.memory import selectors, services
from mcp_services.memory.schemas import (
    MAX_BATCH_ITEMS,
    Key,
    MemoryContent,
    MemoryInput,
    Query,
    StoreItem,
    max_limit,
)
from mcp_services.memory.selectors import SearchMode, score_parts
from mcp_services.serving import CortexMCPServer, invalid_arguments, may_write, refusal


def _require_write() -> None:
    if not may_write():
        raise CortexError(ErrorCode.PERMISSION_DENIED, "This credential may only read memory (search and history).")


def build_memory_server(**auth: Any) -> CortexMCPServer:
    """`auth`: `token_verifier=` and `auth=` from `serving.auth_options` (none in-process)."""
    server = CortexMCPServer(
        "CortexMemory",
        instructions="Per-user memory of Cortex inputs: store, history, hybrid (semantic and full-text) search, delete.",
        **auth,
    )
    most = max_limit()
    resource_args: TypeAdapter[tuple[uuid.UUID, int]] = TypeAdapter(
        tuple[uuid.UUID, Annotated[int, Field(ge=1, le=most)]]
    )

    def parsed_resource_args(user_id: str, limit: int | str) -> tuple[uuid.UUID, int]:
        try:
            return resource_args.validate_python((user_id, limit))
        except ValidationError as exc:
            names = {0: "user_id", 1: "limit"}
            raise refusal(invalid_arguments(exc, names=names)) from None

    @server.tool()
    async def store_input(user_id: uuid.UUID, input_data: MemoryInput) -> dict[str, Any]:
        """Store one input for a user. Idempotent on input_data["id"]: a retry stores nothing new."""
        _require_write()
        item, _created = await db_call(services.memory_item_store)(user_id=user_id, input_data=input_data)
        return {"status": "stored", "user_id": str(user_id), "item_id": item.item_id}

    @server.tool()
    async def store_inputs(
        items: Annotated[list[dict[str, Any]], Field(max_length=MAX_BATCH_ITEMS)],
    ) -> dict[str, Any]:
        """Store many inputs at once: `items` is a list of `{"user_id", "input_data"}` (as `store_input`
        takes them), each stored as `store_input` would (idempotent on input_data["id"]). `results[i]`
        answers `items[i]`: `status` "stored", "duplicate" (a retry; nothing stored) or "invalid" (with
        `code` and `error`): a bad item is refused alone."""
        _require_write()
        parsed: list[tuple[uuid.UUID, MemoryInput]] = []
        refused: dict[int, CortexError] = {}
        for index, entry in enumerate(items):
            try:
                item = StoreItem.model_validate(entry)
            except ValidationError as exc:
                refused[index] = invalid_arguments(exc)
                continue
            parsed.append((item.user_id, item.input_data))
        stored = iter(await db_call(services.memory_items_store)(items=parsed))
        results = [
            {"item_id": None, "status": "invalid", "code": refused[index].code, "error": refused[index].message}
            if index in refused
            else next(stored)
            for index in range(len(items))
        ]
        return {"stored": sum(result["status"] == "stored" for result in results), "results": results}

    @server.tool()
    async def search_memory(
        user_id: uuid.UUID,
        query: Query,
        limit: Annotated[int, Field(ge=1, le=most)] = 10,
        conversation_id: Key | None = None,
        mode: SearchMode = "hybrid",
    ) -> dict[str, Any]:
        """The user's items for the query, best first. `mode`: "hybrid" (default: meaning and words,
        so a paraphrase and an exact identifier are both found), "semantic" (vector similarity
        only) or "keyword" (full-text relevance only).

        `scores[i]` is `items[i]`'s score; `parts[i]` what it is made of: `keyword_rank` (1 = the
        best full-text match, null: not a full-text match), `similarity` (cosine, null: no vector
        compared), `recency` (1 now, halving every 30 days), `coverage` (hybrid: the share of the
        query's words the item holds; null: not a full-text match) and `exact` (hybrid: the item
        names the query's identifiers exactly, or holds the query as a phrase).
        """
        found = await db_call(selectors.memory_search)(
            user_id=user_id, query=query, limit=limit, mode=mode, conversation_id=conversation_id or None
        )
        return {
            "mode": mode,
            "items": [result["item"] for result in found],
            "scores": [result["score"] for result in found],
            "parts": [score_parts(r) for r in found],
        }

    @server.tool()
    async def delete_memory(
        user_id: uuid.UUID, item_id: Key | None = None, conversation_id: Key | None = None, everything: bool = False
    ) -> dict[str, Any]:
        """Delete one item (item_id), a conversation's items (conversation_id), their intersection,
        or every item of the user (everything=true: the user was deleted)."""
        _require_write()
        deleted = await db_call(services.memory_item_delete)(
            user_id=user_id, item_id=item_id or None, conversation_id=conversation_id or None, everything=everything
        )
        return {"deleted": deleted}

    @server.tool()
    async def list_memory(
        user_id: uuid.UUID,
        limit: Annotated[int, Field(ge=1, le=most)] = 50,
        cursor: Key | None = None,
        conversation_id: Key | None = None,
    ) -> dict[str, Any]:
        """The user's items, newest first, `limit` at a time: pass the answer's `next_cursor` as
        `cursor` for the next page (null: no more). Keyset pagination: stable while items are added."""
        items, following = await db_call(selectors.memory_page)(
            user_id=user_id, limit=limit, cursor=cursor or None, conversation_id=conversation_id or None
        )
        return {"items": items, "next_cursor": following}

    @server.tool()
    async def get_memory(user_id: uuid.UUID, item_id: Key) -> dict[str, Any]:
        """One of the user's items; `not_found` for a missing one and for another user's alike."""
        return {"item": await db_call(selectors.memory_item_get)(user_id=user_id, item_id=item_id)}

    @server.tool()
    async def add_memory(
        user_id: uuid.UUID, content: MemoryContent, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Remember something the user states directly, outside any conversation (a new item with a
        new id, `"source": "user"`), embedded like any stored input."""
        _require_write()
        data = MemoryInput.model_validate({"content": content, "metadata": metadata or {}, "source": "user"})
        item, _created = await db_call(services.memory_item_store)(user_id=user_id, input_data=data)
        return {"item": item.data}

    @server.tool()
    async def correct_memory(user_id: uuid.UUID, item_id: Key, content: MemoryContent) -> dict[str, Any]:
        """Replace one of the user's items' content (the user corrected it): re-embedded at once, so
        it is found by its new meaning and words, and no longer by its old ones. `not_found` for a
        missing item and another user's alike."""
        _require_write()
        row = await db_call(services.memory_item_correct)(user_id=user_id, item_id=item_id, content=content)
        return {"item": row.data}

    @server.resource("history/{user_id}", mime_type="application/json")
    async def history(user_id: str) -> list[dict[str, Any]]:
        """The user's items, oldest first."""
        user, _ = parsed_resource_args(user_id, 1)
        return await db_call(selectors.memory_history)(user_id=user)

    @server.resource("history/{user_id}/limit/{limit}", mime_type="application/json")
    async def limited_history(user_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's newest `limit` items, newest first."""
        user, count = parsed_resource_args(user_id, limit)
        return await db_call(selectors.memory_history)(user_id=user, limit=count)

    @server.resource("history/{user_id}/conversation/{conversation_id}/limit/{limit}", mime_type="application/json")
    async def conversation_history(user_id: str, conversation_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's newest `limit` items of one conversation, newest first."""
        user, count = parsed_resource_args(user_id, limit)
        return await db_call(selectors.memory_history)(user_id=user, limit=count, conversation_id=conversation_id)

    return server
