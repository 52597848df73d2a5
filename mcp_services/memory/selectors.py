"""Reads: memory history, and search: full-text (FTS5 on SQLite, tsvector + GIN on PostgreSQL),
vector similarity (numpy over the user's vectors, or pgvector's HNSW index), and the two fused."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from common.errors import CortexError, ErrorCode
from mcp_services.memory import embedding, pgvector, ranking, vectors
from mcp_services.memory.services import normalized_conversation_id
from mcp_services.models import MemoryGeneration, MemoryItem

SearchMode = Literal["hybrid", "keyword", "semantic"]


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


def _cursor(moment: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, int]:
    try:
        moment, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return datetime.fromisoformat(moment), int(row_id)
    except (ValueError, UnicodeDecodeError):
        raise CortexError(ErrorCode.INVALID_INPUT, "cursor is not one this service gave.") from None


def memory_page(
    *, user_id: uuid.UUID, limit: int, cursor: str | None = None, conversation_id: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The user's items newest first, `limit` at a time after `cursor` (keyset pagination on
    (timestamp, row id), the user's index: a page costs the same at the millionth item as at the
    first, and items stored meanwhile neither shift nor repeat a page). Returns the items and the
    cursor of the next page (None: no more)."""
    items = MemoryItem.objects.filter(user_id=user_id)
    if conversation_id:
        items = items.filter(conversation_id=normalized_conversation_id(conversation_id))
    if cursor:
        moment, row_id = _after(cursor)
        items = items.filter(Q(timestamp__lt=moment) | Q(timestamp=moment, id__lt=row_id))
    rows = list(items.order_by("-timestamp", "-id").values_list("id", "data", "timestamp")[: limit + 1])
    following = _cursor(rows[limit - 1][2], rows[limit - 1][0]) if len(rows) > limit else None
    return [data for _, data, _ in rows[:limit]], following


def memory_item_get(*, user_id: uuid.UUID, item_id: str) -> dict[str, Any]:
    """One of the user's items; another user's is the same "not found" as a missing one."""
    data = MemoryItem.objects.filter(user_id=user_id, item_id=str(item_id)).values_list("data", flat=True).first()
    if data is None:
        raise CortexError(ErrorCode.NOT_FOUND, "No such memory item.")
    return data


class SearchResult(TypedDict):
    item: dict[str, Any]
    score: float
    keyword_rank: int | None  # 1 = the best full-text match; None: not a full-text candidate
    similarity: float | None  # cosine similarity with the query; None: no vector compared
    recency: float  # 1 now, halving every RECENCY_HALF_LIFE_DAYS
    coverage: float | None  # share of the query's terms the item holds (hybrid, keyword candidates)
    exact: bool  # names the query's identifiers exactly, or holds the query as a phrase (hybrid)


SCORE_PARTS = ("keyword_rank", "similarity", "recency", "coverage", "exact")


def score_parts(result: SearchResult) -> dict[str, Any]:
    """What a result's score is made of, as the tools answer it."""
    return {name: result[name] for name in SCORE_PARTS}  # type: ignore[literal-required]


def memory_search(
    *,
    user_id: uuid.UUID,
    query: str,
    limit: int,
    mode: SearchMode = "hybrid",
    conversation_id: str | None = None,
) -> list[SearchResult]:
    """The user's items for `query`, best first, each with its score and the parts of it.

    - keyword: full-text relevance only (any query word but stopwords; BM25 / ts_rank_cd), the
      score being the engine's relative to the best match, in (0, 1];
    - semantic: cosine similarity of the vectors only (items without a vector of the current model
      are not found);
    - hybrid: both lists cut to their best candidates and fused (`ranking.fuse`: the similarity,
      plus a bonus for the share of the query's words an item holds and a larger one for an item
      naming the query's identifiers exactly, so a shared word never outweighs the meaning and an
      identifier still comes first). Without a query
      vector (embeddings off or failing) it is the keyword ranking; an item without a vector (not
      reindexed yet) is still found by its words.
    """
    conversation = normalized_conversation_id(conversation_id)
    wanted = max(limit, ranking.CANDIDATES) if mode == "hybrid" else limit
    keyword: list[tuple[int, float]] = []
    if mode != "semantic":
        keyword = _ranked_ids(user_id=user_id, query=query, limit=wanted, conversation_id=conversation)
    embedded = embedding.embed_query(query) if mode != "keyword" else None
    similarities: dict[int, float] = {}
    if embedded is not None:
        model, vector = embedded
        # The keyword candidates' own similarity too, where they have a vector (hybrid).
        missing = [row_id for row_id, _ in keyword]
        if pgvector.fits(vector) and pgvector.enabled(connection):
            similarities = dict(
                pgvector.nearest(
                    connection, user_id=user_id, model=model, query=vector, limit=wanted, conversation_id=conversation
                )
            )
            missing = [row_id for row_id in missing if row_id not in similarities]
            similarities.update(pgvector.similarities(connection, model=model, row_ids=missing, query=vector))
        else:
            matrix = user_vectors(user_id=user_id, model=model)
            similarities = dict(matrix.search(vector, limit=wanted, conversation_id=conversation))
            similarities.update(
                matrix.similarities(vector, [row_id for row_id in missing if row_id not in similarities])
            )
    candidates = {row_id for row_id, _ in keyword} | similarities.keys()
    rows = {
        row_id: (data, moment.timestamp())
        for row_id, data, moment in MemoryItem.objects.filter(id__in=candidates).values_list("id", "data", "timestamp")
    }
    now = timezone.now().timestamp()
    moments = {row_id: moment for row_id, (_, moment) in rows.items()}
    if mode == "hybrid" and embedded is not None:
        contents = {row_id: str(rows[row_id][0].get("content", "")) for row_id, _ in keyword if row_id in rows}
        match = ranking.Matcher(query)
        ranked = ranking.fuse(
            keyword=[row_id for row_id, _ in keyword],
            similarities=similarities,
            moments=moments,
            now=now,
            limit=limit,
            coverage={row_id: match.coverage(content) for row_id, content in contents.items()},
            exact={row_id for row_id, content in contents.items() if match.exact(content)},
        )
    elif mode == "semantic":
        ordered = sorted(
            (
                (row_id, similarity)
                for row_id, similarity in similarities.items()
                if similarity >= ranking.MIN_SIMILARITY
            ),
            key=lambda pair: -pair[1],
        )[:limit]
        ranked = [
            ranking.Ranked(row_id, similarity, None, similarity, ranking.recency(now - moments.get(row_id, now)))
            for row_id, similarity in ordered
        ]
    else:
        best = max((score for _, score in keyword), default=1.0) or 1.0
        ranked = [
            ranking.Ranked(row_id, score / best, rank, None, ranking.recency(now - moments.get(row_id, now)))
            for rank, (row_id, score) in enumerate(keyword[:limit], start=1)
        ]
    return [
        {
            "item": rows[entry.row_id][0],
            "score": round(entry.score, 6),
            "keyword_rank": entry.keyword_rank,
            "similarity": ranking.rounded(entry.similarity),
            "recency": round(entry.recency, 6),
            "coverage": ranking.rounded(entry.coverage),
            "exact": entry.exact,
        }
        for entry in ranked
        if entry.row_id in rows
    ]


# --- full text ---------------------------------------------------------------------------------

# Per database: the ranked match (score: higher is better) and its parameters from the query.
_SEARCH = {
    # External-content FTS5 table; bm25() is lower for better matches. Words only, quoted, so user
    # text is never read as FTS5 syntax.
    "sqlite": (
        "SELECT m.id, -bm25(memory_item_fts) AS score FROM memory_item_fts "
        "JOIN {table} m ON m.id = memory_item_fts.rowid WHERE memory_item_fts MATCH %s AND m.user_id = %s",
        lambda query: [" OR ".join(f'"{term}"' for term in ranking.keyword_terms(query))],
        lambda user_id: user_id.hex,
    ),
    # Generated tsvector column with a GIN index. Any of the query's words (`to_tsquery` of the
    # words alone), or any lexeme as PostgreSQL's parser reads the query (`plainto_tsquery` with
    # its ANDs made ORs): the parser keeps a host name or a version number whole, as it did in the
    # item. Both drop the english configuration's stopwords.
    "postgresql": (
        "SELECT m.id, ts_rank_cd(m.search_vector, q) AS score FROM {table} m, "
        "(SELECT to_tsquery('english', %s) || replace(plainto_tsquery('english', %s)::text, '&', '|')::tsquery AS q) t "
        "WHERE m.search_vector @@ q AND m.user_id = %s",
        lambda query: [" | ".join(ranking.keyword_terms(query)), query],
        lambda user_id: user_id,
    ),
}


def _ranked_ids(*, user_id: uuid.UUID, query: str, limit: int, conversation_id: str | None) -> list[tuple[int, float]]:
    """(row id, engine score), best first: any term matches, the engine ranks (BM25 / ts_rank_cd)."""
    if not ranking.keyword_terms(query):
        return []
    if connection.vendor not in _SEARCH:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"full-text search is not implemented for {connection.vendor}")
    select, query_params, user_param = _SEARCH[connection.vendor]
    sql = select.format(table=MemoryItem._meta.db_table)
    params: list[Any] = [*query_params(query), user_param(user_id)]
    if conversation_id:
        sql += " AND m.conversation_id = %s"
        params.append(conversation_id)
    sql += " ORDER BY score DESC, m.timestamp DESC LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(row_id, float(score)) for row_id, score in cursor.fetchall()]


# --- vectors -----------------------------------------------------------------------------------


def memory_generation(*, user_id: uuid.UUID) -> int:
    return MemoryGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first() or 0


def user_vectors(*, user_id: uuid.UUID, model: str) -> vectors.UserVectors:
    """The user's vectors of `model`, from the process's cache while the user's change count says
    it is current, else read (and cached). The count is read first: a change landing between the
    two reads makes the next search read again, never serves a stale matrix for long."""
    key = user_id.hex
    generation = memory_generation(user_id=user_id)
    cache = vectors.cache()
    found = cache.get(key, model=model, generation=generation)
    if found is not None:
        return found
    rows = (
        MemoryItem.objects.filter(user_id=user_id, embedding_model=model, embedding__isnull=False)
        .order_by("id")
        .values_list("id", "embedding", "conversation_id")
    )
    loaded = vectors.UserVectors.build(
        model=model, generation=generation, rows=rows.iterator(chunk_size=2000), expected=rows.count()
    )
    cache.put(key, loaded)
    return loaded
