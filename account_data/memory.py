"""The core's calls to the memory service for a person's own memory: every read and write goes
over MCP (`mcp_services.client`), never to the memory tables."""

from __future__ import annotations

import uuid
from typing import Any

from common.errors import CortexError, ErrorCode
from mcp_services import client


def memory_tool(tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a memory tool for the caller. The service's refusals keep their code (`not_found` is a
    404, `invalid_input` a 400); anything else from it, or no answer, is a 503."""
    memory = client.memory()
    try:
        return client.call(lambda: memory.call_tool(tool, arguments))
    except client.ServiceToolError as exc:
        if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_INPUT):
            raise CortexError(exc.code, exc.message, fields=exc.fields) from None
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, "The memory service refused the call.") from exc
    except CortexError as exc:
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, "The memory service is unavailable.") from exc


def public_item(data: dict[str, Any]) -> dict[str, Any]:
    """An item as `/memory` shows it: the stored object's main fields (a stored input may hold
    more: the export has all of it)."""
    return {
        "id": str(data.get("id")),
        "content": data.get("content", ""),
        "conversation_id": data.get("conversation_id"),
        "timestamp": data.get("timestamp"),
        "metadata": data.get("metadata") or {},
    }


def memory_list(
    *, user_id: uuid.UUID, limit: int, cursor: str | None = None, conversation_id: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    arguments: dict[str, Any] = {"user_id": str(user_id), "limit": limit}
    if cursor:
        arguments["cursor"] = cursor
    if conversation_id:
        arguments["conversation_id"] = conversation_id
    answer = memory_tool("list_memory", **arguments)
    return answer["items"], answer["next_cursor"]


def memory_search(
    *, user_id: uuid.UUID, query: str, limit: int, conversation_id: str | None = None
) -> list[dict[str, Any]]:
    """Ranked (hybrid), each item with its `score` and `score_parts`."""
    arguments: dict[str, Any] = {"user_id": str(user_id), "query": query, "limit": limit, "mode": "hybrid"}
    if conversation_id:
        arguments["conversation_id"] = conversation_id
    answer = memory_tool("search_memory", **arguments)
    return [
        {**public_item(item), "score": score, "score_parts": parts}
        for item, score, parts in zip(answer["items"], answer["scores"], answer["parts"], strict=True)
    ]


def memory_get(*, user_id: uuid.UUID, item_id: str) -> dict[str, Any]:
    return public_item(memory_tool("get_memory", user_id=str(user_id), item_id=item_id)["item"])


def memory_add(*, user_id: uuid.UUID, content: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return public_item(memory_tool("add_memory", user_id=str(user_id), content=content, metadata=metadata)["item"])


def memory_correct(*, user_id: uuid.UUID, item_id: str, content: str) -> dict[str, Any]:
    answer = memory_tool("correct_memory", user_id=str(user_id), item_id=item_id, content=content)
    return public_item(answer["item"])


def memory_delete(*, user_id: uuid.UUID, item_id: str) -> None:
    """Gone from search, history and context when this returns (the service commits first)."""
    if not memory_tool("delete_memory", user_id=str(user_id), item_id=item_id)["deleted"]:
        raise CortexError(ErrorCode.NOT_FOUND, "No such memory item.")
