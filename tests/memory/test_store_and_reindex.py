"""Vectors written at store time, and `memory_reindex` on items stored without one, against the
real database (in-process: the tools run in threads, so transactional tests)."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mcp_services.memory import services, vectors
from mcp_services.memory.embedding import get_embedder
from mcp_services.memory.schemas import MemoryInput
from mcp_services.models import MemoryGeneration, MemoryItem

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "wordllama/l2_supercat-256"


def test_store_input_and_store_inputs_save_a_unit_vector_with_its_model():
    user = uuid.uuid4()
    services.memory_item_store(user_id=user, input_data=MemoryInput(id="one", content="penguin enclosure budget"))
    services.memory_items_store(
        items=[(user, MemoryInput(id="two", content="otter pool filter")), (user, MemoryInput(id="empty", content=""))]
    )
    rows = {
        item_id: (blob, model)
        for item_id, blob, model in MemoryItem.objects.values_list("item_id", "embedding", "embedding_model")
    }
    for item_id in ("one", "two"):
        blob, model = rows[item_id]
        assert model == MODEL and np.isclose(np.linalg.norm(vectors.decode(blob)), 1.0, atol=1e-5)
        assert len(blob) == 256 * 4
    assert rows["empty"] == (None, MODEL)  # nothing to embed: done, found by keyword only
    assert MemoryGeneration.objects.get(user_id=user).generation == 3  # the triggers counted each insert


def test_reindex_embeds_items_stored_without_vectors_in_batches_and_resumes():
    user = uuid.uuid4()
    texts = [f"note {n} about the penguin enclosure budget" for n in range(7)]
    # As an existing database has them: stored before embeddings (or while the endpoint failed).
    MemoryItem.objects.bulk_create(
        MemoryItem(
            user_id=user,
            item_id=f"old{n}",
            content=text,
            data={"id": f"old{n}", "content": text},
            timestamp="2026-01-01T00:00:00Z",
        )
        for n, text in enumerate(texts)
    )
    assert services.memory_reindex_todo() == 7
    count, last_id = services.memory_items_reindex(after_id=0, batch_size=3)  # then "interrupted"
    assert count == 3 and services.memory_reindex_todo() == 4
    output, progress = io.StringIO(), io.StringIO()
    call_command("memory_reindex", "--batch-size", "2", stdout=output, stderr=progress)
    assert "embedded 4 item(s) with " + MODEL in output.getvalue()
    assert "4 item(s) to embed" in progress.getvalue() and "4/4 items (100%" in progress.getvalue()
    assert services.memory_reindex_todo() == 0
    assert not MemoryItem.objects.filter(embedding__isnull=True).exists()
    assert last_id is not None and get_embedder() is not None


def test_store_inputs_writes_a_large_batch_in_short_transactions_with_each_outcome_right():
    # On the embedded default the memory service writes the core's SQLite file: one transaction for a
    # batch of 500 held the write lock for up to 170 ms, and the inputs' group commits waited behind it.
    user = uuid.uuid4()
    services.memory_items_store(items=[(user, MemoryInput(id=f"i{n}", content=f"note {n}")) for n in (3, 70, 119)])
    items = [(user, MemoryInput(id=f"i{n}", content=f"note {n}")) for n in range(120)]
    items.insert(60, (user, MemoryInput(id="i10", content="note 10")))  # the same item twice in one call
    with CaptureQueriesContext(connection) as queries:
        outcomes = services.memory_items_store(items=items)
    statuses = [outcome["status"] for outcome in outcomes]
    assert [n for n, status in enumerate(statuses) if status == "duplicate"] == [3, 71, 120]  # stored before
    assert statuses.count("stored") == 118  # i10 twice: stored once, "stored" both times
    assert MemoryItem.objects.filter(user_id=user).count() == 120
    begins = [query for query in queries.captured_queries if query["sql"].upper().startswith("BEGIN")]
    if connection.vendor == "sqlite":
        assert len(begins) == -(-120 // services.STORE_CHUNK) > 1
