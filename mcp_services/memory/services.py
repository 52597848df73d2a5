"""Writes of the memory service: memory items (store, batch store, delete)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.errors import CortexError, ErrorCode
from mcp_services.memory.schemas import MemoryInput
from mcp_services.models import MemoryItem


def _invalid(message: str) -> CortexError:
    """Arguments a memory tool refuses; the message is shown to the caller as is."""
    return CortexError(ErrorCode.INVALID_INPUT, message)


def _normalized_item(data: MemoryInput) -> tuple[dict[str, Any], datetime]:
    """The item as stored: the caller's object, with `id` and `timestamp` added when missing."""
    item = data.as_stored()
    item["id"] = str(uuid.uuid4()) if data.id in (None, "") else str(data.id)
    if data.timestamp:
        moment = datetime.fromisoformat(data.timestamp)  # checked by MemoryInput
        moment = moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)
    else:
        moment = timezone.now()
        item["timestamp"] = moment.isoformat().replace("+00:00", "Z")
    limit = settings.CORTEX["MEMORY_MAX_ITEM_BYTES"]
    if len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()) > limit:
        raise _invalid(f"input_data must be at most {limit} bytes of JSON.")
    return item, moment


def normalized_conversation_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


# --- memory items ------------------------------------------------------------------------------


@transaction.atomic
def memory_item_store(*, user_id: uuid.UUID, input_data: MemoryInput) -> tuple[MemoryItem, bool]:
    """Store one item; a retry with the same `input_data["id"]` stores nothing and returns the first.

    Returns the item and whether it was created now.
    """
    item, moment = _normalized_item(input_data)
    return MemoryItem.objects.get_or_create(
        user_id=user_id,
        item_id=item["id"],
        defaults={
            "conversation_id": normalized_conversation_id(item.get("conversation_id")),
            "content": item.get("content", ""),
            "data": item,
            "timestamp": moment,
        },
    )


class StoreOutcome(TypedDict):
    item_id: str | None
    status: str  # "stored", "duplicate" (stored before: a retry) or "invalid"
    code: NotRequired[str]  # an ErrorCode, with "invalid"
    error: NotRequired[str]


def memory_items_store(*, items: list[tuple[uuid.UUID, MemoryInput]]) -> list[StoreOutcome]:
    """Store many `(user_id, input_data)` items in one transaction, each as `memory_item_store`
    would: idempotent on `(user_id, input_data["id"])`, and an invalid item refused on its own
    (`status: "invalid"`) without failing the others."""
    outcomes: list[StoreOutcome] = []
    rows: list[MemoryItem] = []
    for user_id, input_data in items:
        try:
            item, moment = _normalized_item(input_data)
        except CortexError as exc:
            outcomes.append({"item_id": None, "status": "invalid", "code": exc.code, "error": exc.message})
            continue
        outcomes.append({"item_id": item["id"], "status": "stored"})
        rows.append(
            MemoryItem(
                user_id=user_id,
                item_id=item["id"],
                conversation_id=normalized_conversation_id(item.get("conversation_id")),
                content=item.get("content", ""),
                data=item,
                timestamp=moment,
            )
        )
    if not rows:
        return outcomes
    with transaction.atomic():
        existing = set(
            MemoryItem.objects.filter(
                user_id__in={row.user_id for row in rows}, item_id__in={row.item_id for row in rows}
            ).values_list("user_id", "item_id")
        )
        fresh: dict[tuple[uuid.UUID, str], MemoryItem] = {}
        for row in rows:
            key = (row.user_id, row.item_id)
            if key not in existing:
                fresh.setdefault(key, row)  # the same item twice in one call is stored once
        MemoryItem.objects.bulk_create(fresh.values(), ignore_conflicts=True)
    stored = iter(rows)
    for outcome in outcomes:
        if outcome["status"] == "stored":
            row = next(stored)
            if (row.user_id, row.item_id) in existing:
                outcome["status"] = "duplicate"
    return outcomes


@transaction.atomic
def memory_item_delete(
    *, user_id: uuid.UUID, item_id: str | None = None, conversation_id: str | None = None, everything: bool = False
) -> int:
    """One item, a conversation's items, or (`everything`, for a deleted user) all of them."""
    if everything:
        if item_id or conversation_id:
            raise _invalid("everything excludes item_id and conversation_id.")
        deleted, _ = MemoryItem.objects.filter(user_id=user_id).delete()
        return deleted
    if not item_id and not conversation_id:
        raise _invalid("give item_id or conversation_id (or both), or everything=true.")
    items = MemoryItem.objects.filter(user_id=user_id)
    if item_id:
        items = items.filter(item_id=str(item_id))
    if conversation_id:
        items = items.filter(conversation_id=normalized_conversation_id(conversation_id))
    deleted, _ = items.delete()
    return deleted
