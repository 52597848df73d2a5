"""`GET /account/export`: everything an account holds, as one NDJSON download, streamed.

Each table is read in keyset pages (`EXPORT_PAGE_ROWS` rows ordered by primary key) and the memory
items in pages of the memory service's `list_memory`, each page encoded and sent before the next
is read: the process holds one page at a time, whatever the account's size. The generator is
async (each page read in a thread), because Django buffers a sync iterator whole under ASGI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Model, QuerySet

from account_data.memory import memory_list
from accounts.models import User
from turns.models import Turn
from workspaces.models import Conversation, Expert, Message, Workspace

FORMAT = "cortex-export/1"
EXPORT_PAGE_ROWS = 1000
MEMORY_PAGE_ITEMS = 1000


def _line(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _profile(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "metadata": user.metadata,
        "date_joined": _stamp(user.date_joined),
        "last_login": _stamp(user.last_login),
        "has_password": user.has_usable_password(),
    }


def _workspace(row: Workspace) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "metadata": row.metadata,
        "created_at": _stamp(row.created_at),
    }


def _conversation(row: Conversation) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "workspace_id": str(row.workspace_id),
        "topic": row.topic,
        "responder": row.responder,
        "participant_ids": [str(pk) for pk in row.participants.values_list("id", flat=True)],
        "metadata": row.metadata,
        "created_at": _stamp(row.created_at),
    }


def _message(row: Message) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "conversation_id": str(row.conversation_id),
        "sender_id": str(row.sender_id),
        "author": row.author,
        "content": row.content,
        "metadata": row.metadata,
        "created_at": _stamp(row.created_at),
    }


def _expert(row: Expert) -> dict[str, Any]:
    """Without secrets: no credential or token of any kind is exported."""
    return {
        "id": str(row.id),
        "workspace_id": str(row.workspace_id),
        "name": row.name,
        "url": row.url,
        "auth": row.auth,
        "status": row.status,
        "allowed_tools": row.allowed_tools,
        "tools": [tool.get("name") for tool in row.tools if isinstance(tool, dict)],
        "created_at": _stamp(row.created_at),
    }


def _turn(row: Turn) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "conversation_id": str(row.conversation_id),
        "input_id": str(row.input_message_id),
        "kind": row.kind,
        "status": row.status,
        "result_message_id": str(row.result_message_id) if row.result_message_id else None,
        "error": row.error,
        "created_at": _stamp(row.created_at),
        "finished_at": _stamp(row.finished_at),
    }


def _page(queryset: QuerySet, after: Any) -> list[Model]:
    rows = queryset.order_by("pk")
    if after is not None:
        rows = rows.filter(pk__gt=after)
    return list(rows[:EXPORT_PAGE_ROWS])


async def _table(kind: str, queryset: QuerySet, shape: Callable[[Any], dict[str, Any]]) -> AsyncIterator[str]:
    """One chunk of lines per page of `queryset`, in primary-key order."""
    after = None
    while True:
        rows = await sync_to_async(_page)(queryset, after)
        if not rows:
            return
        after = rows[-1].pk
        yield "".join([_line(kind, data) for data in await sync_to_async(_shaped)(rows, shape)])


def _shaped(rows: Iterable[Any], shape: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    return [shape(row) for row in rows]


async def _memory(user: User) -> AsyncIterator[str]:
    cursor = None
    while True:
        items, cursor = await sync_to_async(memory_list)(user_id=user.id, limit=MEMORY_PAGE_ITEMS, cursor=cursor)
        if items:
            yield "".join([_line("memory_item", item) for item in items])
        if cursor is None:
            return


async def export_chunks(user: User) -> AsyncIterator[bytes]:
    """The export's bytes: a header line, then one line per record, then a closing line with the
    count of each type (a download cut short has no closing line)."""
    header = {"format": FORMAT, "exported_at": _stamp(datetime.now(UTC)), "user_id": str(user.id)}
    yield _line("export", header).encode()
    yield _line("profile", await sync_to_async(_profile)(user)).encode()
    taking_part = Conversation.objects.filter(participants=user)
    sources: list[tuple[str, AsyncIterator[str]]] = [
        ("workspace", _table("workspace", Workspace.objects.filter(owner=user), _workspace)),
        ("expert", _table("expert", Expert.objects.filter(workspace__owner=user), _expert)),
        ("conversation", _table("conversation", taking_part, _conversation)),
        ("message", _table("message", Message.objects.filter(conversation__in=taking_part), _message)),
        ("turn", _table("turn", Turn.objects.filter(user=user), _turn)),
        ("memory_item", _memory(user)),
    ]
    counts: dict[str, int] = {}
    for kind, chunks in sources:
        counts[kind] = 0
        async for chunk in chunks:
            counts[kind] += chunk.count("\n")
            yield chunk.encode()
    yield _line("end", {"counts": counts}).encode()
