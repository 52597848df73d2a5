"""Reads of the notes expert: always within one workspace (the one the caller's token names)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q

from common.errors import CortexError, ErrorCode
from mcp_services.notes.models import Note

MAX_QUERY_CHARS = 500
MAX_LIMIT = 100


def note_data(note: Note) -> dict[str, Any]:
    return {
        "id": str(note.id),
        "title": note.title,
        "body": note.body,
        "author_id": str(note.author_id),
        "created_at": note.created_at.isoformat().replace("+00:00", "Z"),
    }


def note_search(*, workspace_id: uuid.UUID, query: str, limit: int = 10) -> list[Note]:
    """Notes of the workspace whose title or body contains every word of `query`, newest first."""
    if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
        raise CortexError(ErrorCode.INVALID_INPUT, f"query must be a string of at most {MAX_QUERY_CHARS} characters.")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise CortexError(ErrorCode.INVALID_INPUT, f"limit must be an integer from 1 to {MAX_LIMIT}.")
    notes = Note.objects.filter(workspace_id=workspace_id)
    for word in query.split()[:20]:
        notes = notes.filter(Q(title__icontains=word) | Q(body__icontains=word))
    return list(notes.order_by("-created_at", "-id")[:limit])


def note_get(*, workspace_id: uuid.UUID, note_id: uuid.UUID) -> Note:
    """One note of the workspace; another workspace's note is as missing as one that never existed."""
    note = Note.objects.filter(workspace_id=workspace_id, id=note_id).first()
    if note is None:
        raise CortexError(ErrorCode.NOT_FOUND, "No such note.")
    return note
