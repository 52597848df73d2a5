"""The memory outbox against the real database: written with the message, claimed, retried."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from common import wakeups
from conftest import client_for
from mcp_services.models import OutboxEntry
from mcp_services.outbox import delivery, services
from tests.servers import free_port


def post_input(user, content: str, conversation=None):
    body = {"content": content, "conversation_id": str(conversation.id) if conversation else None}
    response = client_for(user).post("/input", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["data"]


@pytest.fixture
def memory_down(settings):
    settings.CORTEX = {
        **settings.CORTEX,
        "MEMORY_URL": f"http://127.0.0.1:{free_port()}/mcp",
        "SERVICE_TIMEOUT_SECONDS": 2,
    }


def test_an_accepted_input_writes_one_store_entry_for_its_sender(bob, conversation):
    data = post_input(bob, "hello", conversation)
    [entry] = OutboxEntry.objects.all()
    assert entry.kind == OutboxEntry.Kind.STORE and entry.pending
    assert str(entry.user_id) == str(bob.id) and str(entry.message_id) == data["id"]
    assert entry.arguments == {"user_id": str(bob.id), "input_data": data}


def test_a_refused_input_writes_no_entry(alice):
    response = client_for(alice).post("/input", {"content": ""}, format="json")
    assert response.status_code == 400
    assert not OutboxEntry.objects.exists()


def test_the_entry_rolls_back_with_the_message(alice):
    from workspaces.services import message_create

    with pytest.raises(RuntimeError), transaction.atomic():
        message_create(sender=alice, content="lost with the transaction")
        raise RuntimeError
    assert not OutboxEntry.objects.exists()


def test_a_claimed_entry_is_leased_to_one_drainer(alice):
    post_input(alice, "one")
    [entry] = services.outbox_claim(limit=10)  # read after the claim's short write: with its lease
    assert entry.claimed_until is not None and entry.claimed_until > timezone.now()
    assert services.outbox_claim(limit=10) == []
    OutboxEntry.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert len(services.outbox_claim(limit=10)) == 1, "an expired lease (a dead drainer) frees the entry"


def test_entries_are_not_due_before_their_next_attempt(alice):
    post_input(alice, "later")
    OutboxEntry.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert services.outbox_claim(limit=10) == []
    assert len(services.outbox_claim(limit=10, ignore_schedule=True)) == 1


def test_deleting_a_conversation_queues_a_delete_per_sender_and_drops_unsent_stores(alice, bob, conversation):
    post_input(alice, "from alice", conversation)
    post_input(bob, "from bob", conversation)
    kept = post_input(alice, "outside any conversation")
    response = client_for(alice).delete(f"/config/conversation/{conversation.id}")
    assert response.status_code == 204
    stores = OutboxEntry.objects.filter(kind=OutboxEntry.Kind.STORE)
    assert [str(entry.message_id) for entry in stores] == [kept["id"]]
    deletes = OutboxEntry.objects.filter(kind=OutboxEntry.Kind.DELETE)
    assert {(str(e.user_id), str(e.conversation_id)) for e in deletes} == {
        (str(alice.id), str(conversation.id)),
        (str(bob.id), str(conversation.id)),
    }


def test_a_delete_waits_for_a_store_of_its_conversation_already_in_flight(alice, conversation):
    post_input(alice, "in flight", conversation)
    [in_flight] = services.outbox_claim(limit=10)
    client_for(alice).delete(f"/config/conversation/{conversation.id}")
    assert services.outbox_claim(limit=10) == [], "the delete must not overtake the store"
    services.outbox_mark_delivered(entry_ids=[in_flight.id])
    [delete] = services.outbox_claim(limit=10)
    assert delete.kind == OutboxEntry.Kind.DELETE


def test_backoff_grows_exponentially_up_to_the_cap(settings):
    settings.CORTEX = {**settings.CORTEX, "OUTBOX_BACKOFF_BASE_SECONDS": 1, "OUTBOX_BACKOFF_MAX_SECONDS": 60}
    delays = [services.outbox_backoff(attempts=n).total_seconds() for n in (1, 2, 3, 4, 10, 100)]
    for delay, full in zip(delays, [1, 2, 4, 8, 60, 60], strict=True):
        assert full / 2 <= delay <= full


@pytest.mark.django_db(transaction=True)
def test_with_memory_down_a_drain_schedules_retries_and_keeps_everything(alice, memory_down):
    for n in range(3):
        post_input(alice, f"kept {n}")
    result = delivery.outbox_drain()
    assert (result.delivered, result.retried) == (0, 3)
    entries = list(OutboxEntry.objects.all())
    assert all(entry.pending and entry.attempts == 1 and entry.claimed_until is None for entry in entries)
    assert all("unreachable" in entry.last_error and entry.next_attempt_at > timezone.now() for entry in entries)
    assert delivery.outbox_drain().claimed == 0, "nothing is due before the backoff"


def test_on_commit_kicks_a_drain_without_waiting_for_it(alice, settings, django_capture_on_commit_callbacks):
    settings.CORTEX = {**settings.CORTEX, "MEMORY_DRAIN_ON_COMMIT": False}
    with django_capture_on_commit_callbacks() as callbacks:
        post_input(alice, "kick")
    assert delivery.kick in callbacks


def test_by_the_worker_a_commit_wakes_it_once_and_drains_nothing_here(
    alice, settings, tmp_path, django_capture_on_commit_callbacks
):
    # MEMORY_DRAIN_BY_WORKER (run_cortex's group): one wake-up per transaction (loopback here), no drain.
    settings.CORTEX = {
        **settings.CORTEX,
        "MEMORY_DRAIN_BY_WORKER": True,
        "TURN_WAKEUPS": "loopback",
        "TURN_WAKEUP_DIR": str(tmp_path),
    }
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        post_input(alice, "one")
        delivery.deliver_after_commit()  # a second writer in the same transaction adds nothing
    assert delivery.kick not in callbacks
    assert callbacks.count(wakeups._signals["outbox"][2]) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_drainers_claim_disjoint_entries(alice):
    import threading

    from django.db import connections

    for n in range(40):
        post_input(alice, f"claim {n}")
    claimed: list[list[int]] = []
    barrier = threading.Barrier(2)

    def drainer() -> None:
        try:
            barrier.wait()
            claimed.append([entry.id for entry in services.outbox_claim(limit=40)])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drainer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = claimed
    assert not set(first) & set(second)
    assert len(first) + len(second) == 40


def test_admin_lists_memory_items_and_the_outbox(admin_client, alice):
    post_input(alice, "visible in the admin")
    for url in (
        "/admin/mcp_services/outboxentry/",
        "/admin/mcp_services/outboxentry/?state=pending",
        "/admin/mcp_services/outboxentry/?state=retrying&kind=store",
        "/admin/mcp_services/outboxentry/?q=" + str(alice.id),
        "/admin/mcp_services/memoryitem/",
        "/admin/mcp_services/memoryitem/?q=visible",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    entry = OutboxEntry.objects.get()
    assert b"pending" in admin_client.get("/admin/mcp_services/outboxentry/").content
    assert admin_client.get(f"/admin/mcp_services/outboxentry/{entry.id}/change/").status_code == 200


def test_sync_memory_reports_an_unavailable_service_and_keeps_the_entries(alice, memory_down):
    from django.core.management import CommandError, call_command

    post_input(alice, "by hand")
    OutboxEntry.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    with pytest.raises(CommandError, match="unavailable"):
        call_command("sync_memory")
    [entry] = OutboxEntry.objects.all()
    assert entry.pending and entry.attempts == 1, "sync_memory ignores the backoff schedule"


def test_only_a_refusal_of_the_arguments_stops_the_retries():
    from common.errors import ErrorCode
    from mcp_services.client import ServiceToolError, ServiceUnavailable

    assert ServiceToolError(ErrorCode.INVALID_INPUT, "user_id must be a UUID.").permanent
    assert not ServiceToolError(ErrorCode.TOOL_ERROR, "Error executing tool store_input").permanent, "a crash"
    assert not ServiceUnavailable("Connection closed").permanent


@pytest.fixture
def memory_in_process(settings, memory_server):
    """The drains' memory client is a real memory service, in this process (its tools run in
    threads: the test's database must be transactional)."""
    from mcp_services import client

    settings.CORTEX = {**settings.CORTEX, "MEMORY_URL": f"http://127.0.0.1:{free_port()}/mcp"}
    key = (
        "memory",
        settings.CORTEX["MEMORY_URL"],
        settings.CORTEX["SERVICE_TOKEN"],
        float(settings.CORTEX["SERVICE_TIMEOUT_SECONDS"]),
    )
    service = client.ServiceClient(name="memory", target=memory_server, token=None, timeout=10)
    client._service_loop.clients[key] = service
    yield
    client.call(service.aclose, timeout=10)
    client._service_loop.clients.pop(key, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backlog_only", [False, True])
def test_a_drain_that_runs_on_its_own_stops_after_a_partial_batch(alice, conversation, memory_in_process, backlog_only):
    # A store in flight holds back its conversation's delete; once the store is due again, the
    # first batch claims it alone (partial), and the delete is due only after it is delivered.
    post_input(alice, "in flight", conversation)
    [store] = services.outbox_claim(limit=10)
    assert client_for(alice).delete(f"/config/conversation/{conversation.id}").status_code == 204
    OutboxEntry.objects.filter(id=store.id).update(claimed_until=timezone.now() - timedelta(seconds=1))
    result = delivery.outbox_drain(backlog_only=backlog_only)
    pending = OutboxEntry.objects.filter(delivered_at__isnull=True, failed_at__isnull=True)
    if backlog_only:  # the caller (the kicker, the worker) comes back for the delete after its pause
        assert result.delivered == 1
        assert [entry.kind for entry in pending.all()] == [OutboxEntry.Kind.DELETE]
        assert delivery.outbox_drain(backlog_only=True).delivered == 1
    else:
        assert result.delivered == 2
    assert not pending.all().exists()
