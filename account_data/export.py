"""`GET /account/export`: everything an account holds, as one NDJSON download, streamed.

Each table is read in keyset pages (`EXPORT_PAGE_ROWS` rows ordered by primary key) and the memory
items in pages of the memory service's `list_memory`, each page encoded and sent before the next
is read: the process holds one page at a time, whatever the account's size. The generator is
async (each page read in a thread), because Django buffers a sync iterator whole under ASGI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Q, QuerySet

from account_data.memory import memory_list
from accounts.models import ExternalIdentity, User
from audit.selectors import entries_after
from schedules.models import Schedule
from turns.inbox.models import InboxRequest
from turns.models import Turn
from webhooks.models import Webhook
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


# Each table's exported fields (`values()` names): no secret of any kind is among them (an
# expert's tools by name only; no password hash, token or key anywhere).
FIELDS = {
    "workspace": ("id", "name", "description", "metadata", "created_at"),
    "expert": ("id", "workspace_id", "name", "url", "auth", "status", "allowed_tools", "tools", "created_at"),
    "conversation": ("id", "workspace_id", "topic", "responder", "metadata", "created_at"),
    "message": ("id", "conversation_id", "sender_id", "author", "content", "metadata", "created_at"),
    "turn": (
        "id",
        "conversation_id",
        "input_message_id",
        "kind",
        "status",
        "result_message_id",
        "error",
        "created_at",
        "finished_at",
    ),
    # Requests of the account's own turns, with what it answered (`data` is what it was shown:
    # the tool and arguments, or the question and its form).
    "inbox_request": (
        "id",
        "turn_id",
        "conversation_id",
        "kind",
        "status",
        "data",
        "answer",
        "created_at",
        "expires_at",
        "answered_at",
    ),
    # Linked sign-ins at identity providers: who the provider says the account is, nothing to sign in with.
    "identity": ("id", "provider", "issuer", "subject", "email", "created_at", "last_login"),
    "schedule": (
        "id",
        "conversation_id",
        "content",
        "cron",
        "timezone",
        "active",
        "next_run_at",
        "last_run_at",
        "created_at",
    ),
    # Without its secret, like an expert without its tokens.
    "webhook": ("id", "url", "events", "description", "active", "created_at"),
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _stamp(value)
    return str(value) if isinstance(value, uuid.UUID) else value


def _page(kind: str, queryset: QuerySet, after: tuple[datetime, Any] | None) -> list[dict[str, Any]]:
    """The next `EXPORT_PAGE_ROWS` rows after `after` (created_at, pk) in time order, raw values."""
    rows = queryset.order_by("created_at", "pk")
    if after is not None:
        rows = rows.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1]))
    return list(rows.values(*FIELDS[kind])[:EXPORT_PAGE_ROWS])


def _exported(kind: str, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page as exported: plain JSON values, an expert's tools by name, a conversation's
    participants (one query for the page)."""
    exported = [{name: _plain(value) for name, value in row.items()} for row in page]
    if kind == "identity":
        for row in exported:
            del row["id"]  # an internal row number, kept only for paging
    if kind == "expert":
        for row in exported:
            row["tools"] = [tool.get("name") for tool in row["tools"] or [] if isinstance(tool, dict)]
    if kind == "conversation":
        members: dict[str, list[str]] = {row["id"]: [] for row in exported}
        through = Conversation.participants.through.objects.filter(conversation_id__in=list(members))
        for conversation_id, user_id in through.values_list("conversation_id", "user_id"):
            members[str(conversation_id)].append(str(user_id))
        for row in exported:
            row["participant_ids"] = members[row["id"]]
    return exported


async def _table(kind: str, queryset: QuerySet) -> AsyncIterator[str]:
    """One chunk of lines per page of `queryset`, oldest first (keyset on created_at and pk)."""
    after = None
    while True:
        page = await sync_to_async(_page)(kind, queryset, after)
        if not page:
            return
        after = (page[-1]["created_at"], page[-1]["id"])
        yield "".join([_line(kind, row) for row in await sync_to_async(_exported)(kind, page)])


async def _memory(user: User) -> AsyncIterator[str]:
    cursor = None
    while True:
        limit = min(MEMORY_PAGE_ITEMS, settings.CORTEX["MEMORY_MAX_LIMIT"])
        items, cursor = await sync_to_async(memory_list)(user_id=user.id, limit=limit, cursor=cursor)
        if items:
            yield "".join([_line("memory_item", item) for item in items])
        if cursor is None:
            return


async def _audit(user: User) -> AsyncIterator[str]:
    """The account's audit entries, oldest first, in keyset pages on the id."""
    after = 0
    while True:
        items = await sync_to_async(entries_after)(actor_id=user.id, after=after, limit=EXPORT_PAGE_ROWS)
        if not items:
            return
        after = items[-1]["id"]
        yield "".join([_line("audit_entry", item) for item in items])


async def export_chunks(user: User) -> AsyncIterator[bytes]:
    """The export's bytes: a header line, then one line per record, then a closing line with the
    count of each type (a download cut short has no closing line)."""
    header = {"format": FORMAT, "exported_at": _stamp(datetime.now(UTC)), "user_id": str(user.id)}
    yield _line("export", header).encode()
    yield _line("profile", await sync_to_async(_profile)(user)).encode()
    taking_part = Conversation.objects.filter(participants=user)
    sources: list[tuple[str, AsyncIterator[str]]] = [
        ("identity", _table("identity", ExternalIdentity.objects.filter(user=user))),
        ("workspace", _table("workspace", Workspace.objects.filter(owner=user))),
        ("expert", _table("expert", Expert.objects.filter(workspace__owner=user))),
        ("conversation", _table("conversation", taking_part)),
        ("message", _table("message", Message.objects.filter(conversation__in=taking_part))),
        ("turn", _table("turn", Turn.objects.filter(user=user))),
        ("inbox_request", _table("inbox_request", InboxRequest.objects.filter(user=user))),
        ("schedule", _table("schedule", Schedule.objects.filter(owner=user))),
        ("webhook", _table("webhook", Webhook.objects.filter(owner=user))),
        ("audit_entry", _audit(user)),
        ("memory_item", _memory(user)),
    ]
    counts: dict[str, int] = {}
    for kind, chunks in sources:
        counts[kind] = 0
        async for chunk in chunks:
            counts[kind] += chunk.count("\n")
            yield chunk.encode()
    yield _line("end", {"counts": counts}).encode()
