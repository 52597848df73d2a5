"""What the worker's poll and claim read, counted rather than timed: SQLite's virtual machine steps
(its progress handler at every instruction), the same on any machine at any load. A user at their
running-turn cap with queued turns in many conversations must cost the claim and the poll nothing
per conversation: their heads are parked (`Turn.parked`) until their share frees, not read and
skipped at every claim (issue 24)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection, transaction

from tests.factories import ConversationFactory
from turns import services
from turns.models import Turn
from workspaces.services import InputRequest, messages_create

pytestmark = pytest.mark.django_db

MORE = 200  # conversations added to the capped user's queue between the two measures


def steps(call: Callable[[], object]) -> int:
    connection.ensure_connection()
    raw = connection.connection
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    raw.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        raw.set_progress_handler(None, 1)
    return count


def queue(user, conversations) -> list[str]:
    outcomes = messages_create(
        requests=[InputRequest(sender=user, content="q", conversation_id=c.id) for c in conversations]
    )
    return [outcome[0]["turn_id"] for outcome in outcomes]


def test_a_capped_users_open_conversations_cost_the_claim_and_the_poll_nothing(alice, bob, workspace, settings):
    if connection.vendor != "sqlite":
        pytest.skip("counted with SQLite's progress handler (the claim's queries are the same on PostgreSQL)")
    settings.CORTEX = {**settings.CORTEX, "TURN_MAX_RUNNING_PER_USER": 1}
    echo = {"workspace": workspace, "responder": "echo"}
    queue(alice, [ConversationFactory(**echo)])
    assert len(services.turns_claim(owner="elsewhere", limit=64)[0]) == 1  # alice is at her cap
    queue(alice, [ConversationFactory(**echo) for _ in range(5)])
    bobs = ConversationFactory(workspace=workspace, participants=[bob], responder="echo")

    def measure() -> tuple[int, int]:
        """(poll, claim) steps while bob has one runnable turn; the claim is rolled back."""
        services.turns_claim(owner="w", limit=64)  # whatever a claim does once with alice's new heads
        [bobs_turn] = queue(bob, [bobs])

        def claim() -> None:
            with transaction.atomic():
                assert [str(row.id) for row in services.turns_claim(owner="w", limit=64)[0]] == [bobs_turn]
                transaction.set_rollback(True)

        measured = steps(services.turns_due_exist), steps(claim)
        Turn.objects.filter(id=bobs_turn).update(status="cancelled", head=False)
        return measured

    poll_few, claim_few = measure()
    queue(alice, [ConversationFactory(**echo) for _ in range(MORE)])
    poll_many, claim_many = measure()
    print(f"poll {poll_few} -> {poll_many} steps, claim {claim_few} -> {claim_many} steps")
    # Today's cost of one skipped head is tens of steps; a few per conversation would be growth.
    assert poll_many - poll_few < MORE, (poll_few, poll_many)
    assert claim_many - claim_few < MORE, (claim_few, claim_many)
    assert Turn.objects.filter(user=alice, status="queued", head=True).count() == 5 + MORE


def test_a_freed_share_starts_the_capped_users_oldest_queued_head_next(alice, workspace, settings):
    settings.CORTEX = {**settings.CORTEX, "TURN_MAX_RUNNING_PER_USER": 1}
    conversations = [ConversationFactory(workspace=workspace, responder="echo") for _ in range(4)]
    turn_ids = queue(alice, conversations)
    [running], _ = services.turns_claim(owner="w1", limit=64)
    assert str(running.id) == turn_ids[0]
    assert services.turns_claim(owner="w1", limit=64)[0] == []  # parks the rest
    services.turns_write(owner="w1", writes=[services.TurnWrite(running.id, finish="completed", content="x")])
    assert services.turns_due_exist()
    [second], _ = services.turns_claim(owner="w1", limit=64)
    assert str(second.id) == turn_ids[1]
    # A failed turn frees the share as well.
    services.turns_write(owner="w1", writes=[services.TurnWrite(second.id, finish="failed", error="x")])
    [third], _ = services.turns_claim(owner="w1", limit=64)
    assert str(third.id) == turn_ids[2]
