"""Writes of the memory service: memory items (store, batch store, delete)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.errors import CortexError, ErrorCode
from mcp_services.memory import embedding, pgvector, vectors
from mcp_services.memory.schemas import MemoryInput
from mcp_services.models import MemoryGeneration, MemoryItem


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


def _new_row(user_id: uuid.UUID, item: dict[str, Any], moment: datetime) -> MemoryItem:
    """The unsaved row of a normalized item (its vector is set by the caller)."""
    return MemoryItem(
        user_id=user_id,
        item_id=item["id"],
        conversation_id=normalized_conversation_id(item.get("conversation_id")),
        content=item.get("content", ""),
        data=item,
        timestamp=moment,
    )


def memory_item_store(*, user_id: uuid.UUID, input_data: MemoryInput) -> tuple[MemoryItem, bool]:
    """Store one item; a retry with the same `input_data["id"]` stores nothing and returns the first.

    The content is embedded first, outside the transaction. Returns the item and whether it was
    created now.
    """
    item, moment = _normalized_item(input_data)
    model, [vector] = embedding.embed_texts([item.get("content", "")])
    row = _new_row(user_id, item, moment)
    row.embedding = None if vector is None else vectors.encode(vector)
    row.embedding_model = model
    with transaction.atomic():
        if pgvector.enabled(connection):  # the vector column in the same INSERT
            inserted = pgvector.insert(connection, [row], [vector])
            if not inserted:
                return MemoryItem.objects.get(user_id=user_id, item_id=item["id"]), False
            row.id, row._state.adding, row._state.db = inserted[0][0], False, connection.alias
            return row, True
        # Insert first (a retry is the exception): one statement instead of a read and an insert.
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:  # stored before: (user_id, item_id) is unique
            return MemoryItem.objects.get(user_id=user_id, item_id=item["id"]), False
        _vectors_written(model=model, rows=[(row.id, user_id, vector, row.conversation_id)])
    return row, True


class StoreOutcome(TypedDict):
    item_id: str | None
    status: str  # "stored", "duplicate" (stored before: a retry) or "invalid"
    code: NotRequired[str]  # an ErrorCode, with "invalid"
    error: NotRequired[str]


def memory_items_store(*, items: list[tuple[uuid.UUID, MemoryInput]]) -> list[StoreOutcome]:
    """Store many `(user_id, input_data)` items, each as `memory_item_store` would: idempotent on
    `(user_id, input_data["id"])`, and an invalid item refused on its own (`status: "invalid"`)
    without failing the others. The contents are embedded in one batch first, then written in
    transactions of STORE_CHUNK rows (a failure part-way leaves the chunks before it stored: the
    caller's retry finds them as duplicates)."""
    outcomes: list[StoreOutcome] = []
    rows: list[MemoryItem] = []
    for user_id, input_data in items:
        try:
            item, moment = _normalized_item(input_data)
        except CortexError as exc:
            outcomes.append({"item_id": None, "status": "invalid", "code": exc.code, "error": exc.message})
            continue
        outcomes.append({"item_id": item["id"], "status": "stored"})
        rows.append(_new_row(user_id, item, moment))
    if not rows:
        return outcomes
    model, embedded = embedding.embed_texts([row.content for row in rows])
    by_key: dict[tuple[uuid.UUID, str], np.ndarray | None] = {}
    unique: dict[tuple[uuid.UUID, str], MemoryItem] = {}  # the same item twice in one call is stored once
    for row, vector in zip(rows, embedded, strict=True):
        row.embedding = None if vector is None else vectors.encode(vector)
        row.embedding_model = model
        key = (row.user_id, row.item_id)
        if key not in unique:
            unique[key], by_key[key] = row, vector
    existing: set[tuple[uuid.UUID, str]] = set()
    keys = list(unique)
    for start in range(0, len(keys), STORE_CHUNK):
        chunk = {key: unique[key] for key in keys[start : start + STORE_CHUNK]}
        existing |= _rows_store(chunk, by_key, model)
    stored_rows = iter(rows)
    for outcome in outcomes:
        if outcome["status"] == "stored":
            row = next(stored_rows)
            if (row.user_id, row.item_id) in existing:
                outcome["status"] = "duplicate"
    return outcomes


# Rows per write transaction of `memory_items_store`. On the embedded default the memory service
# writes the core's SQLite file: a batch of 500 (OUTBOX_BATCH_SIZE) in one transaction held the write
# lock for 40-170 ms, and every input's group commit waited behind it (bench.lock_trace: the top of
# POST /input's p99). A chunk holds it for a few milliseconds; the inputs go in between.
STORE_CHUNK = 50


def _rows_store(
    rows: dict[tuple[uuid.UUID, str], MemoryItem],
    by_key: dict[tuple[uuid.UUID, str], np.ndarray | None],
    model: str | None,
) -> set[tuple[uuid.UUID, str]]:
    """One write transaction: the rows not stored yet (idempotent on their keys); returns the keys
    that already were."""
    with transaction.atomic():
        existing = set(
            MemoryItem.objects.filter(
                user_id__in={user_id for user_id, _ in rows}, item_id__in={item_id for _, item_id in rows}
            ).values_list("user_id", "item_id")
        )
        fresh = {key: row for key, row in rows.items() if key not in existing}
        if fresh and pgvector.enabled(connection):  # the vector column in the same INSERT
            pgvector.insert(connection, list(fresh.values()), [by_key[key] for key in fresh])
        elif fresh:
            MemoryItem.objects.bulk_create(fresh.values(), ignore_conflicts=True)
            # ignore_conflicts leaves the new rows without ids: read them back, for the users whose
            # matrix the process holds (the others' next search reads their vectors anew).
            held = {user_id for user_id, _ in fresh if user_id.hex in vectors.cache()}
            if held:
                stored = MemoryItem.objects.filter(
                    user_id__in=held, item_id__in={item_id for user_id, item_id in fresh if user_id in held}
                ).values_list("id", "user_id", "item_id", "conversation_id")
                _vectors_written(
                    model=model,
                    rows=[
                        (row_id, user_id, by_key[(user_id, item_id)], conversation_id)
                        for row_id, user_id, item_id, conversation_id in stored
                        if (user_id, item_id) in fresh
                    ],
                )
    return existing


@transaction.atomic
def memory_item_delete(
    *, user_id: uuid.UUID, item_id: str | None = None, conversation_id: str | None = None, everything: bool = False
) -> int:
    """One item, a conversation's items, or (`everything`, for a deleted user) all of them.

    The rows go with their vectors (and their full-text and pgvector index entries); the memory
    process's copy of the user's vectors loses them at commit, or all of it for `everything`,
    together with the user's change count: nothing of the user is left.
    """
    if everything:
        if item_id or conversation_id:
            raise _invalid("everything excludes item_id and conversation_id.")
        deleted, _ = MemoryItem.objects.filter(user_id=user_id).delete()
        MemoryGeneration.objects.filter(user_id=user_id).delete()
        transaction.on_commit(lambda: vectors.cache().forget(user_id.hex))
        return deleted
    if not item_id and not conversation_id:
        raise _invalid("give item_id or conversation_id (or both), or everything=true.")
    items = MemoryItem.objects.filter(user_id=user_id)
    if item_id:
        items = items.filter(item_id=str(item_id))
    if conversation_id:
        items = items.filter(conversation_id=normalized_conversation_id(conversation_id))
    row_ids = list(items.values_list("id", flat=True))
    if not row_ids:
        return 0
    deleted, _ = MemoryItem.objects.filter(id__in=row_ids).delete()
    _changed(user_id=user_id, count=deleted, removed=row_ids)
    return deleted


def memory_item_correct(*, user_id: uuid.UUID, item_id: str, content: str) -> MemoryItem:
    """Replace an item's content (the person corrected it) and its vector: found by its new
    meaning and words at once, by its old ones no more (the full-text index follows the content by
    trigger; the memory process's matrix gets the new vector at commit). The content is embedded
    first, outside the transaction."""
    model, [vector] = embedding.embed_texts([content])
    with transaction.atomic():
        row = MemoryItem.objects.select_for_update().filter(user_id=user_id, item_id=str(item_id)).first()
        if row is None:
            raise CortexError(ErrorCode.NOT_FOUND, "No such memory item.")
        row.data = {**row.data, "content": content}
        limit = settings.CORTEX["MEMORY_MAX_ITEM_BYTES"]
        if len(json.dumps(row.data, separators=(",", ":"), ensure_ascii=False).encode()) > limit:
            raise _invalid(f"The item must be at most {limit} bytes of JSON.")
        row.content = content
        row.embedding = None if vector is None else vectors.encode(vector)
        row.embedding_model = model
        row.save(update_fields=["content", "data", "embedding", "embedding_model"])
        if pgvector.enabled(connection):
            pgvector.write(connection, [(row.id, vector)])
        _changed(
            user_id=user_id,
            count=1,
            model=model,
            replaced=[(row.id, vector)] if vector is not None else None,
            removed=[row.id] if vector is None else None,
        )
    return row


def memory_items_reindex(*, after_id: int, batch_size: int, everything: bool = False) -> tuple[int, int | None]:
    """Embed the next `batch_size` items after row `after_id` (in id order) whose vector is missing
    or was made by another model (`everything`: all of them). Returns how many and the last row id
    (None: nothing left). Each batch is its own transaction, so a stopped reindex resumes where it
    was; the embedding runs before it, and a failing endpoint raises (nothing is marked done)."""
    embedder = embedding.get_embedder()
    if embedder is None:
        raise CortexError(ErrorCode.INVALID_INPUT, "Embeddings are off (MEMORY_EMBEDDER=off): nothing to reindex.")
    todo = MemoryItem.objects.filter(id__gt=after_id)
    if not everything:
        todo = todo.exclude(embedding_model=embedder.name)
    batch = list(todo.order_by("id").values_list("id", "content")[:batch_size])
    if not batch:
        return 0, None
    embedded = embedder.embed([content for _, content in batch])
    with transaction.atomic():
        MemoryItem.objects.bulk_update(
            [
                MemoryItem(
                    id=row_id,
                    embedding=None if vector is None else vectors.encode(vector),
                    embedding_model=embedder.name,
                )
                for (row_id, _), vector in zip(batch, embedded, strict=True)
            ],
            ["embedding", "embedding_model"],
        )
        if pgvector.enabled(connection):
            pgvector.write(connection, [(row_id, vector) for (row_id, _), vector in zip(batch, embedded, strict=True)])
    return len(batch), batch[-1][0]


def memory_reindex_todo(*, everything: bool = False) -> int:
    embedder = embedding.get_embedder()
    if embedder is None or everything:
        return MemoryItem.objects.count()
    return MemoryItem.objects.exclude(embedding_model=embedder.name).count()


# --- the memory process's copy of users' vectors -------------------------------------------------


def _vectors_written(*, model: str | None, rows: list[tuple[int, uuid.UUID, np.ndarray | None, str | None]]) -> None:
    """Inside the storing transaction (without pgvector, whose column is written by the INSERT):
    tell the process's cache, at commit, what was added."""
    if not rows:
        return
    by_user: dict[uuid.UUID, list[tuple[int, np.ndarray | None, str | None]]] = {}
    for row_id, user_id, vector, conversation_id in rows:
        by_user.setdefault(user_id, []).append((row_id, vector, conversation_id))
    for user_id, added in by_user.items():
        _changed(
            user_id=user_id,
            count=len(added),
            model=model,
            added=[(row_id, vector, conversation) for row_id, vector, conversation in added if vector is not None],
        )


def _changed(
    *,
    user_id: uuid.UUID,
    count: int,
    model: str | None = None,
    added: list[tuple[int, np.ndarray, str | None]] | None = None,
    removed: list[int] | None = None,
    replaced: list[tuple[int, np.ndarray]] | None = None,
) -> None:
    """Inside the writing transaction, after `count` row changes of the user (which the triggers
    counted): at commit, apply them to the cached matrix if nobody else changed the user's items
    in between (the count read now, minus ours, is the matrix's)."""
    if pgvector.enabled(connection):
        return
    key = user_id.hex
    if key not in vectors.cache():
        # Nothing held to update: the next search reads the user's vectors (and their count) anew.
        return
    after = MemoryGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first() or 0
    transaction.on_commit(
        lambda: vectors.cache().apply(
            key,
            before=after - count,
            after=after,
            model=model,
            added=added or (),
            removed=removed or (),
            replaced=replaced or (),
        )
    )
