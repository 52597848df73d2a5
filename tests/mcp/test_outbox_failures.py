"""An outbox entry that can never be delivered is marked failed with its reason, once, and does
not take the shared MCP connection (nor the entries next to it) down; a service that is only
unreachable is retried for as long as it takes."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.db import connection

from common.errors import ErrorCode
from mcp_services import client
from mcp_services.models import OutboxEntry
from mcp_services.outbox import delivery, services
from tests.mcp.conftest import memory_history, memory_service, running
from tests.servers import fresh_database, server_env


@pytest.fixture(scope="module")
def memory_url():
    """A real memory service with a database of its own."""
    with fresh_database() as database, running(memory_service(server_env(**database))) as server:
        yield f"{server.url}/mcp"


@pytest.fixture
def real_memory(settings, memory_url):
    settings.CORTEX = {**settings.CORTEX, "MEMORY_URL": memory_url}
    return memory_url


def enqueue(user_id: uuid.UUID, content: str) -> str:
    message_id = uuid.uuid4()
    services.outbox_stores_enqueue(stores=[(user_id, message_id, {"id": str(message_id), "content": content})])
    return str(message_id)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.database_agnostic  # skipped on PostgreSQL (its jsonb refuses the entry)
def test_an_entry_that_cannot_be_encoded_is_marked_failed_once_and_the_others_are_delivered(
    alice, real_memory, caplog, admin_client
):
    if connection.vendor == "postgresql":
        pytest.skip(
            "PostgreSQL's jsonb refuses a lone surrogate when the entry is written, so such an "
            "entry cannot exist there; on SQLite it can"
        )
    good_before = enqueue(alice.id, "before")
    # A lone surrogate: valid in a Python string and in escaped JSON, but not encodable as UTF-8.
    bad = enqueue(alice.id, "broken \ud800 text")
    good_after = enqueue(alice.id, "after")

    with caplog.at_level(logging.INFO, logger="mcp_services"):
        result = delivery.outbox_drain()
    assert (result.delivered, result.retried, result.failed) == (2, 0, 1)
    failed = OutboxEntry.objects.get(message_id=bad)
    assert failed.failed_at is not None and failed.attempts == 1 and not failed.pending
    assert "UnsendableArguments" in failed.last_error and "surrogates not allowed" in failed.last_error
    assert not any("connection closed" in record.getMessage() for record in caplog.records), (
        "a client-side failure must not drop the shared connection"
    )
    assert sorted(item["id"] for item in memory_history(real_memory, str(alice.id))) == sorted(
        [good_before, good_after]
    )

    assert delivery.outbox_drain(ignore_schedule=True).claimed == 0, "a failed entry is not retried"
    page = admin_client.get("/admin/mcp_services/outboxentry/?state=failed").content.decode()
    assert "refused" in page and "UnsendableArguments" in page


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.database_agnostic  # the drain in this process: plain ORM, the claim runs in tests/mcp/test_outbox.py
def test_an_entry_the_service_refuses_as_invalid_is_marked_failed_at_the_first_answer(alice, real_memory):
    services.outbox_stores_enqueue(stores=[(alice.id, uuid.uuid4(), {"id": "x", "content": "fine", "timestamp": 12})])
    assert delivery.outbox_drain().failed == 1
    entry = OutboxEntry.objects.get()
    assert entry.failed_at is not None and entry.attempts == 1 and "invalid_input" in entry.last_error


def test_a_service_error_is_retried_up_to_the_limit_and_an_outage_without_limit(settings):
    settings.CORTEX = {**settings.CORTEX, "OUTBOX_MAX_TOOL_ERRORS": 3}
    crash = client.ServiceToolError(ErrorCode.TOOL_ERROR, "Error executing tool store_input")  # it failed on it
    assert not delivery.give_up(OutboxEntry(attempts=0), crash)
    assert not delivery.give_up(OutboxEntry(attempts=1), crash)
    assert delivery.give_up(OutboxEntry(attempts=2), crash), "the third error is the last"
    outage = client.ServiceUnavailable("memory service unreachable")
    assert not delivery.give_up(OutboxEntry(attempts=10_000), outage)


def test_unsendable_arguments_are_caught_before_anything_is_sent():
    assert client.encoding_error({"content": "plain ✓"}) is None
    assert "surrogates not allowed" in client.encoding_error({"content": "\udfff"})
    assert client.encoding_error({"n": float("nan")}) is not None
