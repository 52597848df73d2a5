"""Writes of the notes expert (its own service: workspaces are ids from the caller's token)."""

from __future__ import annotations

import uuid

from django.db import transaction

from common.errors import CortexError, ErrorCode
from mcp_services.notes.models import Note

MAX_TITLE_CHARS = 200
MAX_BODY_CHARS = 20_000


@transaction.atomic
def note_add(*, workspace_id: uuid.UUID, author_id: uuid.UUID, title: str, body: str) -> Note:
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE_CHARS:
        raise CortexError(ErrorCode.INVALID_INPUT, f"title must be 1 to {MAX_TITLE_CHARS} characters.")
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise CortexError(ErrorCode.INVALID_INPUT, f"body must be a string of at most {MAX_BODY_CHARS} characters.")
    return Note.objects.create(workspace_id=workspace_id, author_id=author_id, title=title.strip(), body=body)


@transaction.atomic
def note_delete(*, workspace_id: uuid.UUID, note_id: uuid.UUID) -> None:
    """Another workspace's note is as missing as one that never existed."""
    deleted, _ = Note.objects.filter(workspace_id=workspace_id, id=note_id).delete()
    if not deleted:
        raise CortexError(ErrorCode.NOT_FOUND, "No such note.")
