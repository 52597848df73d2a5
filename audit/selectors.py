"""Reads of the audit log: a person's own entries, newest first (keyset pagination on the id)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from audit.models import AuditEntry


def entries_for_actor(
    *, actor_id: uuid.UUID, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    rows = AuditEntry.objects.filter(actor_id=actor_id).order_by("-id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(rows.values("id", "at", "action", "ip", "target", "detail")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    items = [entry_json(row) for row in page]
    return items, (page[-1]["id"] if more else None)


def entries_after(*, actor_id: uuid.UUID, after: int, limit: int) -> list[dict[str, Any]]:
    """Oldest first from after `after` (the export's pages)."""
    rows = AuditEntry.objects.filter(actor_id=actor_id, id__gt=after).order_by("id")
    return [entry_json(row) for row in rows.values("id", "at", "action", "ip", "target", "detail")[:limit]]


def entry_json(row: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": row["id"], "at": row["at"].isoformat(), "action": row["action"]}
    if row.get("ip"):
        item["ip"] = row["ip"]
    if row.get("target"):
        item["target"] = row["target"]
    item["detail"] = row["detail"]
    return item
