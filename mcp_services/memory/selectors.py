"""Reads: memory history and full-text search (FTS5 on SQLite, tsvector + GIN on PostgreSQL)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.conf import settings
from django.db import connection

from mcp_services.memory.services import normalized_conversation_id
from mcp_services.models import MemoryItem

# Search terms: words only, so user text can never be read as FTS5 / tsquery syntax.
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32


def memory_history(
    *, user_id: uuid.UUID, limit: int | None = None, conversation_id: str | None = None
) -> list[dict[str, Any]]:
    """Without `limit`: oldest first (capped at MEMORY_HISTORY_MAX_ITEMS). With it: the newest
    `limit`, newest first, as the guide's `history/{user_id}/limit/{limit}` does."""
    items = MemoryItem.objects.filter(user_id=user_id)
    if conversation_id:
        items = items.filter(conversation_id=normalized_conversation_id(conversation_id))
    if limit is None:
        items = items.order_by("timestamp", "id")[: settings.CORTEX["MEMORY_HISTORY_MAX_ITEMS"]]
    else:
        items = items.order_by("-timestamp", "-id")[:limit]
    return list(items.values_list("data", flat=True))


def search_terms(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_TERMS]


def memory_search(
    *, user_id: uuid.UUID, query: str, limit: int, conversation_id: str | None = None
) -> list[tuple[dict[str, Any], float]]:
    """The user's items matching any query term, most relevant first, with a relevance in (0, 1].

    Relevance is the engine's own ranking (BM25 on SQLite, `ts_rank_cd` on PostgreSQL) divided by
    the best score of the result, so callers can blend it with other signals.
    """
    terms = search_terms(query)
    if not terms:
        return []
    rows = _ranked_ids(
        user_id=user_id, terms=terms, limit=limit, conversation_id=normalized_conversation_id(conversation_id)
    )
    if not rows:
        return []
    best = max(score for _, score in rows) or 1.0
    ids = [row_id for row_id, _ in rows]
    data = dict(MemoryItem.objects.filter(id__in=ids).values_list("id", "data"))
    return [(data[row_id], score / best) for row_id, score in rows if row_id in data]


# Per database: the ranked match (score: higher is better), the query text, the user id's form.
_SEARCH = {
    # External-content FTS5 table; bm25() is lower for better matches.
    "sqlite": (
        "SELECT m.id, -bm25(memory_item_fts) AS score FROM memory_item_fts "
        "JOIN {table} m ON m.id = memory_item_fts.rowid WHERE memory_item_fts MATCH %s AND m.user_id = %s",
        lambda terms: " OR ".join(f'"{term}"' for term in terms),
        lambda user_id: user_id.hex,
    ),
    # Generated tsvector column with a GIN index.
    "postgresql": (
        "SELECT m.id, ts_rank_cd(m.search_vector, q) AS score FROM {table} m, to_tsquery('english', %s) q "
        "WHERE m.search_vector @@ q AND m.user_id = %s",
        lambda terms: " | ".join(terms),
        lambda user_id: user_id,
    ),
}


def _ranked_ids(
    *, user_id: uuid.UUID, terms: list[str], limit: int, conversation_id: str | None
) -> list[tuple[int, float]]:
    """(row id, engine score), best first: any term matches, the engine ranks (BM25 / ts_rank_cd)."""
    if connection.vendor not in _SEARCH:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"full-text search is not implemented for {connection.vendor}")
    select, query_text, user_param = _SEARCH[connection.vendor]
    sql = select.format(table=MemoryItem._meta.db_table)
    params: list[Any] = [query_text(terms), user_param(user_id)]
    if conversation_id:
        sql += " AND m.conversation_id = %s"
        params.append(conversation_id)
    sql += " ORDER BY score DESC, m.timestamp DESC LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(row_id, float(score)) for row_id, score in cursor.fetchall()]
