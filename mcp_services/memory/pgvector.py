"""pgvector on PostgreSQL: an `embedding_vec vector(256)` column with an HNSW index, where the
server has the extension (migration 0003, or `manage.py memory_reindex --pgvector` later).

The column mirrors `embedding` for vectors of the bundled model's width (`DIM`); vectors of
another width (an embeddings endpoint with another model) stay in `embedding` only and are
searched in numpy, as everywhere without pgvector. Written with SQL: the model does not declare
the column, which exists on some databases only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from django.db import DatabaseError, transaction

logger = logging.getLogger(__name__)

DIM = 256
TABLE = "mcp_services_memoryitem"
COLUMN = "embedding_vec"
INDEX = "memory_item_embedding_hnsw"

_enabled: dict[str, bool] = {}


def available(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        return cursor.fetchone() is not None


def install(connection: Any) -> bool:
    """Create the extension, the column and the index if the server has pgvector; False if not."""
    if connection.vendor != "postgresql" or not available(connection):
        logger.info("pgvector is not available on this PostgreSQL server: vectors are searched in numpy")
        return False
    try:
        # A savepoint: a refusal (no privilege) leaves the migration's transaction usable.
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except DatabaseError as exc:
        logger.warning(
            "pgvector is installed but CREATE EXTENSION vector failed (%s): vectors are searched in numpy", exc
        )
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {COLUMN} vector({DIM})")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} USING hnsw ({COLUMN} vector_cosine_ops)")
    _enabled.pop(connection.alias, None)
    return True


def uninstall(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")
        cursor.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {COLUMN}")
    _enabled.pop(connection.alias, None)


def enabled(connection: Any) -> bool:
    """Whether this database has the column (looked up once per process and database)."""
    if connection.vendor != "postgresql":
        return False
    if connection.alias not in _enabled:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", [TABLE, COLUMN]
            )
            _enabled[connection.alias] = cursor.fetchone() is not None
    return _enabled[connection.alias]


def literal(vector: np.ndarray) -> str:
    """pgvector's text form, `[x,y,...]` (float32 values print exactly with repr of a float)."""
    return "[" + ",".join(map(repr, vector.astype(np.float64).tolist())) + "]"


def fits(vector: np.ndarray | None) -> bool:
    return vector is not None and vector.shape == (DIM,)


def write(connection: Any, rows: list[tuple[int, np.ndarray | None]]) -> None:
    """Mirror `embedding` into the column for these row ids (None clears it)."""
    if not rows:
        return
    ids = [row_id for row_id, _ in rows]
    texts = [literal(vector) if vector is not None and fits(vector) else None for _, vector in rows]
    with connection.cursor() as cursor:  # one statement for the whole batch
        cursor.execute(
            f"UPDATE {TABLE} AS m SET {COLUMN} = v.vec::vector "
            "FROM unnest(%s::bigint[], %s::text[]) AS v(id, vec) WHERE m.id = v.id",
            [ids, texts],
        )


_INSERTED = (
    "user_id",
    "item_id",
    "conversation_id",
    "content",
    "data",
    "timestamp",
    "stored_at",
    "embedding",
    "embedding_model",
)
_ARRAY_TYPES = ("uuid", "text", "text", "text", "text", "timestamptz", "timestamptz", "bytea", "text")


def insert(connection: Any, rows: list[Any], vectors: list[np.ndarray | None]) -> list[tuple[int, Any, str, Any]]:
    """INSERT unsaved `MemoryItem`s with their vector column in the same statement: each row and
    each of its indexes (HNSW, GIN, btrees) written once, where the ORM's INSERT and an UPDATE of
    the column would write them twice. Rows already stored (same user and item id) are skipped.
    Returns (id, user_id, item_id, conversation_id) of the rows inserted."""
    if not rows:
        return []
    from mcp_services.models import MemoryItem

    fields: list[Any] = [MemoryItem._meta.get_field(name) for name in _INSERTED]
    data = fields[_INSERTED.index("data")]
    columns: list[str] = [field.column for field in fields]
    values: list[list[Any]] = [[] for _ in fields]
    for row in rows:
        for position, field in enumerate(fields):
            value = getattr(row, field.attname)
            if field is data:
                value = json.dumps(value, cls=data.encoder)
            elif isinstance(value, memoryview):
                value = bytes(value)
            values[position].append(value)
    texts = [literal(vector) if fits(vector) else None for vector in vectors]  # type: ignore[arg-type]
    names = [f"c{position}" for position in range(len(fields))]
    selected = [f"{name}::jsonb" if field is data else name for name, field in zip(names, fields, strict=True)]
    arrays = [f"%s::{kind}[]" for kind in _ARRAY_TYPES] + ["%s::text[]"]
    sql = (
        f"INSERT INTO {TABLE} ({', '.join(columns)}, {COLUMN}) "
        f"SELECT {', '.join(selected)}, v::vector FROM unnest({', '.join(arrays)}) AS r({', '.join(names)}, v) "
        "ON CONFLICT (user_id, item_id) DO NOTHING RETURNING id, user_id, item_id, conversation_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, texts])
        return [tuple(found) for found in cursor.fetchall()]


def nearest(
    connection: Any, *, user_id: Any, model: str, query: np.ndarray, limit: int, conversation_id: str | None
) -> list[tuple[int, float]]:
    """(row id, cosine similarity) of the user's nearest vectors through the HNSW index.

    The index is shared by all users: an iterative scan keeps walking the graph until `limit` rows
    of this user are found (pgvector >= 0.8), instead of filtering the first `ef_search` and
    returning fewer. `relaxed_order` may return them slightly out of order; the caller sorts."""
    sql = (
        f"SELECT id, 1 - ({COLUMN} <=> %s::vector) FROM {TABLE} "
        f"WHERE user_id = %s AND embedding_model = %s AND {COLUMN} IS NOT NULL"
    )
    text = literal(query)
    params: list[Any] = [text, user_id, model]
    if conversation_id:
        sql += " AND conversation_id = %s"
        params.append(conversation_id)
    sql += f" ORDER BY {COLUMN} <=> %s::vector LIMIT %s"
    params += [text, limit]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(40, 2 * limit))])
        cursor.execute(sql, params)
        return [(row_id, float(similarity)) for row_id, similarity in cursor.fetchall()]


def similarities(connection: Any, *, model: str, row_ids: list[int], query: np.ndarray) -> dict[int, float]:
    if not row_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, 1 - ({COLUMN} <=> %s::vector) FROM {TABLE} "
            f"WHERE id = ANY(%s) AND embedding_model = %s AND {COLUMN} IS NOT NULL",
            [literal(query), row_ids, model],
        )
        return {row_id: float(similarity) for row_id, similarity in cursor.fetchall()}
