"""Stored vectors and the brute-force search over them.

A vector is stored as little-endian float32 bytes (a BLOB on SQLite, `bytea` on PostgreSQL) beside
the item, with the name of the model that made it. Without pgvector, search is exact: one matrix
product over the user's vectors in numpy (100,000 vectors of 256 dimensions: about 2 ms on one
core). Reading those vectors from the database for each query would cost far more than the
product, so the memory process keeps each searched user's matrix (`VectorCache`); the database
counts every change to a user's items (`generation`, kept by triggers, so every write path counts:
the service, `memory_reindex`, a bulk load, the admin) and the cache trusts a matrix only while
the count is the one it was built at. The service applies its own writes to the matrix at commit
(an append, or removed rows) instead of dropping it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

DTYPE = np.dtype("<f4")


def encode(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=DTYPE).tobytes()


def decode(blob: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(blob, dtype=DTYPE)


# A large matrix is multiplied in two halves on two threads while no other search uses the second
# one: measured here on 100,000 x 256, 7.0 ms in one product, 2.5 ms in two halves at once (one
# BLAS thread each: OpenBLAS's own threads cost more than they gave under concurrent requests).
# Searches that find the helper busy multiply alone, so concurrent requests never queue for it.
SPLIT_ROWS = 20_000
_helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-search")
_helper_free = threading.Lock()


def _products(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`matrix @ query`, in two halves at once when the matrix is large and the helper is free."""
    rows = matrix.shape[0]
    if rows < SPLIT_ROWS or not _helper_free.acquire(blocking=False):
        return matrix @ query
    try:
        out = np.empty(rows, dtype=DTYPE)
        half = rows // 2
        second = _helper.submit(np.dot, matrix[half:], query, out[half:])
        np.dot(matrix[:half], query, out[:half])
        second.result()
        return out
    finally:
        _helper_free.release()


@dataclass
class UserVectors:
    """One user's vectors of one model: row `i` of `matrix` is the item with row id `ids[i]`."""

    model: str
    generation: int
    ids: np.ndarray  # int64 row ids
    matrix: np.ndarray  # float32, (n, dim), unit rows
    conversations: list[str | None] = field(default_factory=list)
    # The storage `ids` and `matrix` are the first rows of, with room for appends (None: exactly
    # sized). Appending fills the room instead of copying the whole matrix per stored item.
    spare: _Room | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        *,
        model: str,
        generation: int,
        rows: Iterable[tuple[int, bytes | memoryview | None, str | None]],
        expected: int = 0,
    ) -> UserVectors:
        """The matrix of `rows` (row id, vector bytes, conversation id), in their order.

        Filled in place (`expected`: about how many rows come) rather than joined from a list of
        every row's bytes: 100,000 rows would otherwise hold the matrix twice, and leave the
        process's heap fragmented and its RSS high long after."""
        ids: list[int] = []
        conversations: list[str | None] = []
        matrix = np.zeros((0, 0), dtype=DTYPE)
        for row_id, blob, conversation_id in rows:
            if blob is None:  # nothing to embed (the query reads only rows with a vector)
                continue
            vector = np.frombuffer(blob, dtype=DTYPE)
            if not ids:
                matrix = np.empty((max(expected, 1), vector.shape[0]), dtype=DTYPE)
            elif len(ids) == matrix.shape[0]:
                matrix = np.concatenate([matrix, np.empty_like(matrix)])  # more rows than expected
            if vector.shape[0] != matrix.shape[1]:  # pragma: no cover - a corrupt row
                raise ValueError("stored vectors of one model have different lengths")
            matrix[len(ids)] = vector
            ids.append(row_id)
            conversations.append(conversation_id)
        return cls(
            model=model,
            generation=generation,
            ids=np.array(ids, dtype=np.int64),
            matrix=matrix[: len(ids)].copy() if len(ids) != matrix.shape[0] else matrix,
            conversations=conversations,
        )

    @property
    def nbytes(self) -> int:
        arrays = (self.spare.matrix, self.spare.ids) if self.spare is not None else (self.matrix, self.ids)
        return sum(int(array.nbytes) for array in arrays) + 8 * len(self.conversations)

    def search(self, query: np.ndarray, *, limit: int, conversation_id: str | None = None) -> list[tuple[int, float]]:
        """(row id, cosine similarity), most similar first: exact, over every row."""
        if not len(self.ids) or self.matrix.shape[1] != query.shape[0]:
            return []
        similarities = _products(self.matrix, query.astype(DTYPE, copy=False))
        if conversation_id is not None:
            mask = np.fromiter((c == conversation_id for c in self.conversations), dtype=bool, count=len(self.ids))
            similarities = np.where(mask, similarities, -np.inf)
        count = min(limit, len(similarities))
        top = np.argpartition(-similarities, count - 1)[:count]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return [(int(self.ids[i]), float(similarities[i])) for i in top if np.isfinite(similarities[i])]

    def similarities(self, query: np.ndarray, row_ids: Iterable[int]) -> dict[int, float]:
        """The similarity of these rows (those with a vector here) with the query. `ids` is sorted:
        rows are read in id order and appended rows are newer."""
        if not len(self.ids) or self.matrix.shape[1] != query.shape[0]:
            return {}
        wanted = np.fromiter(row_ids, dtype=np.int64)
        positions = np.searchsorted(self.ids, wanted)
        found = (positions < len(self.ids)) & (self.ids[np.minimum(positions, len(self.ids) - 1)] == wanted)
        rows = positions[found]
        values = self.matrix[rows] @ query.astype(DTYPE, copy=False)
        return {int(row_id): float(value) for row_id, value in zip(wanted[found], values, strict=True)}

    def appended(self, *, generation: int, rows: Sequence[tuple[int, np.ndarray, str | None]]) -> UserVectors:
        """A new entry with `rows` after these (the cache's lock held: one writer at a time).

        The rows go into the room left after this matrix when it has some and nobody appended
        there since (searches holding this entry see only its own rows, which do not change);
        otherwise into a new array with room for about 1/8 more rows. So a user with 100,000
        items copies their 100 MB once per some 12,000 stored items, not once per item."""
        if not rows:
            return UserVectors(self.model, generation, self.ids, self.matrix, self.conversations, self.spare)
        added = np.stack([vector for _, vector, _ in rows]).astype(DTYPE, copy=False)
        used, count = len(self.ids), len(rows)
        room = self.spare
        if room is None or room.used != used or room.matrix.shape[0] < used + count or not used:
            if used and added.shape[1] != self.matrix.shape[1]:  # pragma: no cover - cache keyed by model
                raise ValueError("appended vectors have another length")
            capacity = used + count + max(1024, (used + count) // 8)
            room = _Room(np.empty((capacity, added.shape[1]), dtype=DTYPE), np.empty(capacity, dtype=np.int64), used)
            room.matrix[:used] = self.matrix
            room.ids[:used] = self.ids
        room.matrix[used : used + count] = added
        room.ids[used : used + count] = [row_id for row_id, _, _ in rows]
        room.used = used + count
        return UserVectors(
            self.model,
            generation,
            room.ids[: used + count],
            room.matrix[: used + count],
            self.conversations + [conversation for _, _, conversation in rows],
            room,
        )

    def replacing(self, *, generation: int, rows: Sequence[tuple[int, np.ndarray]]) -> UserVectors | None:
        """A copy with these rows' vectors replaced (a corrected item keeps its row id, so its
        place in the sorted `ids`); None when a row is not held here (it had no vector: appending
        it would break the order of `ids`, so the matrix is read again)."""
        matrix = self.matrix.copy()
        for row_id, vector in rows:
            position = int(np.searchsorted(self.ids, row_id))
            if position >= len(self.ids) or self.ids[position] != row_id:
                return None
            matrix[position] = vector
        return UserVectors(self.model, generation, self.ids, matrix, self.conversations)

    def without(self, *, generation: int, row_ids: Iterable[int]) -> UserVectors:
        keep = ~np.isin(self.ids, np.fromiter(row_ids, dtype=np.int64))
        return UserVectors(
            self.model,
            generation,
            self.ids[keep],
            np.ascontiguousarray(self.matrix[keep]) if len(self.ids) else self.matrix,
            [c for c, kept in zip(self.conversations, keep, strict=True) if kept],
        )


@dataclass
class _Room:
    """Arrays with room for more rows: the first `used` are an entry's `ids` and `matrix`."""

    matrix: np.ndarray
    ids: np.ndarray
    used: int


_cache: VectorCache | None = None
_cache_lock = threading.Lock()


def cache() -> VectorCache:
    """The process's cache (the memory service's), sized by MEMORY_VECTOR_CACHE_MB."""
    global _cache
    if _cache is None:
        from django.conf import settings

        with _cache_lock:
            if _cache is None:
                _cache = VectorCache(max_bytes=settings.CORTEX["MEMORY_VECTOR_CACHE_MB"] * 1024 * 1024)
    return _cache


class VectorCache:
    """Users' matrices, least recently used dropped first past `max_bytes`.

    Entries are replaced, never changed in place, so a search holds a consistent matrix while a
    write swaps in the next one; the lock only guards the dictionary.
    """

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, UserVectors] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_key: str, *, model: str, generation: int) -> UserVectors | None:
        with self._lock:
            entry = self._entries.get(user_key)
            if entry is None or entry.model != model or entry.generation != generation:
                return None
            self._entries.move_to_end(user_key)
            return entry

    def put(self, user_key: str, entry: UserVectors) -> None:
        with self._lock:
            current = self._entries.get(user_key)
            if current is not None and current.model == entry.model and current.generation > entry.generation:
                return  # a newer matrix got here first
            self._entries[user_key] = entry
            self._entries.move_to_end(user_key)
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                total -= dropped.nbytes

    def apply(
        self,
        user_key: str,
        *,
        before: int,
        after: int,
        model: str | None = None,
        added: Sequence[tuple[int, np.ndarray, str | None]] = (),
        removed: Iterable[int] = (),
        replaced: Sequence[tuple[int, np.ndarray]] = (),
    ) -> None:
        """Our own committed write moved the user's change count from `before` to `after`, adding
        `added` (vectors of `model`), removing `removed` and replacing the vectors of `replaced`
        (corrected items): update the matrix if it is the one at
        `before`. Any other difference (another writer got in between) drops it, and the next
        search reads the user's vectors again."""
        with self._lock:
            entry = self._entries.get(user_key)
            if entry is None or entry.generation >= after:
                return  # nothing cached, or read after our commit: it already holds our write
            if entry.generation != before or ((added or replaced) and entry.model != model):
                del self._entries[user_key]
                return
            removed = list(removed)
            updated = entry.without(generation=after, row_ids=removed) if removed else entry
            if replaced:
                swapped = updated.replacing(generation=after, rows=replaced)
                if swapped is None:
                    del self._entries[user_key]
                    return
                updated = swapped
            self._entries[user_key] = updated.appended(generation=after, rows=list(added))

    def forget(self, user_key: str) -> None:
        with self._lock:
            self._entries.pop(user_key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, user_key: str) -> bool:
        with self._lock:
            return user_key in self._entries
