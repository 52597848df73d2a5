"""The vector store's pieces without a database: the bytes format, exact search, and when the
memory process may keep using a user's matrix."""

from __future__ import annotations

import numpy as np

from mcp_services.memory.vectors import SPLIT_ROWS, UserVectors, VectorCache, decode, encode


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def matrix(generation: int = 1) -> UserVectors:
    rows = [(1, encode(unit(1, 0, 0)), None), (2, encode(unit(0, 1, 0)), "c1"), (3, encode(unit(1, 1, 0)), "c1")]
    return UserVectors.build(model="m", generation=generation, rows=rows)


def test_vectors_round_trip_as_little_endian_float32():
    vector = unit(0.25, -1.5, 3.0)
    blob = encode(vector)
    assert len(blob) == 12 and blob == vector.astype("<f4").tobytes()
    assert np.array_equal(decode(blob), vector)


def test_search_is_exact_and_ordered_and_filters_by_conversation():
    vectors = matrix()
    found = vectors.search(unit(1, 0.1, 0), limit=3)
    assert [row_id for row_id, _ in found] == [1, 3, 2]
    assert found[0][1] > found[1][1] > found[2][1]
    assert [row_id for row_id, _ in vectors.search(unit(1, 0, 0), limit=3, conversation_id="c1")] == [3, 2]
    assert vectors.search(unit(1, 0), limit=3) == []  # another model's width: nothing to compare


def test_cache_applies_our_own_write_only_on_the_generation_it_was_built_at():
    cache = VectorCache(max_bytes=10**6)
    cache.put("u", matrix(generation=5))
    cache.apply("u", before=5, after=6, model="m", added=[(4, unit(0, 0, 1), None)])
    entry = cache.get("u", model="m", generation=6)
    assert entry is not None and list(entry.ids) == [1, 2, 3, 4]
    cache.apply("u", before=6, after=8, removed=[2, 3])
    entry = cache.get("u", model="m", generation=8)
    assert entry is not None and list(entry.ids) == [1, 4]
    # Another writer got in between (the count moved by more than our write): the matrix goes.
    cache.apply("u", before=9, after=10, removed=[1])
    assert "u" not in cache
    assert cache.get("u", model="m", generation=10) is None


def test_cache_never_serves_another_generation_or_model_and_forgets_a_user():
    cache = VectorCache(max_bytes=10**6)
    cache.put("u", matrix(generation=3))
    assert cache.get("u", model="m", generation=4) is None
    assert cache.get("u", model="other", generation=3) is None
    cache.forget("u")
    assert "u" not in cache


def test_cache_drops_the_least_recently_used_user_past_its_size():
    one = matrix()
    cache = VectorCache(max_bytes=2 * one.nbytes)
    cache.put("a", matrix())
    cache.put("b", matrix())
    cache.get("a", model="m", generation=1)
    cache.put("c", matrix())
    assert "a" in cache and "c" in cache and "b" not in cache


def test_similarities_of_given_rows_skip_rows_without_a_vector():
    vectors = matrix()
    found = vectors.similarities(unit(1, 0, 0), [3, 7, 1])
    assert set(found) == {1, 3}
    assert np.isclose(found[1], 1.0) and np.isclose(found[3], np.sqrt(0.5))


def test_appends_fill_room_without_changing_what_an_older_entry_holds():
    base = matrix()
    first = base.appended(generation=2, rows=[(4, unit(0, 0, 1), "c2")])
    second = first.appended(generation=3, rows=[(5, unit(0, 1, 1), None)])
    # The second append went into the room the first one made: no copy of the matrix.
    assert second.spare is first.spare and np.shares_memory(second.matrix, first.matrix)
    assert list(base.ids) == [1, 2, 3] and list(first.ids) == [1, 2, 3, 4] and list(second.ids) == [1, 2, 3, 4, 5]
    assert [row_id for row_id, _ in first.search(unit(0, 0.1, 1), limit=5)] == [4, 2, 3, 1]  # no 5 here
    # Appending to an entry that is not the newest on its room copies instead of overwriting row 5.
    other = first.appended(generation=3, rows=[(6, unit(1, 0, 1), None)])
    assert other.spare is not first.spare
    assert list(second.ids) == [1, 2, 3, 4, 5] and np.allclose(second.matrix[4], unit(0, 1, 1))
    assert list(other.ids) == [1, 2, 3, 4, 6] and other.conversations[3] == "c2"
    assert second.nbytes >= second.spare.matrix.nbytes  # the cache counts the room it holds


def test_a_large_matrix_is_searched_in_two_halves_with_the_same_answer():
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((SPLIT_ROWS + 1001, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    vectors = UserVectors.build(model="m", generation=1, rows=[(n, encode(row), None) for n, row in enumerate(rows)])
    query = rows[SPLIT_ROWS + 1000]  # in the second half: found only if that half was multiplied
    found = vectors.search(query, limit=5)
    expected = np.argsort(-(rows @ query), kind="stable")[:5]
    assert [row_id for row_id, _ in found] == list(expected) and found[0][0] == SPLIT_ROWS + 1000
    assert np.isclose(found[0][1], 1.0)
