"""Turns through the API and their services against the real database: alice owns, bob
participates, charlie is an outsider. The worker's runtime is exercised end to end in
test_turns_e2e.py; here its database steps (claim, write) are called as the worker calls them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import client_for
from mcp_services.models import OutboxEntry
from streaming.models import Event
from tests.factories import ConversationFactory
from turns import services
from turns.models import Turn
from workspaces.models import Message

pytestmark = pytest.mark.django_db


def post_input(user, conversation, content, **headers):
    return client_for(user).post(
        "/input", {"content": content, "conversation_id": str(conversation.id)}, format="json", **headers
    )


def event_types(user, conversation=None) -> list[str]:
    events = Event.objects.filter(recipient=user).order_by("seq").select_related("body")
    return [event.body.type for event in events]


@pytest.fixture
def echo_conversation(workspace, bob):
    return ConversationFactory(workspace=workspace, topic="Echo", participants=[bob], responder="echo")


def test_responder_is_none_by_default_and_set_on_create_and_patch(alice, workspace):
    client = client_for(alice)
    created = client.post("/config/conversation", {"workspace_id": str(workspace.id), "topic": "t"}, format="json")
    assert created.json()["conversation"]["responder"] == "none"
    conversation_id = created.json()["conversation"]["id"]
    echo = client.post(
        "/config/conversation", {"workspace_id": str(workspace.id), "topic": "e", "responder": "echo"}, format="json"
    )
    assert echo.status_code == 201 and echo.json()["conversation"]["responder"] == "echo"
    patched = client.patch(f"/config/conversation/{conversation_id}", {"responder": "llm"}, format="json")
    assert patched.status_code == 200 and patched.json()["conversation"]["responder"] == "llm"
    refused = client.patch(f"/config/conversation/{conversation_id}", {"responder": "oracle"}, format="json")
    assert refused.status_code == 400 and "responder" in refused.json()["error"]["fields"]


def test_input_without_responder_starts_no_turn(alice, conversation):
    response = post_input(alice, conversation, "hello")
    assert response.status_code == 200
    assert "turn_id" not in response.json()
    assert not Turn.objects.exists()
    assert event_types(alice) == ["input"]


def test_input_to_echo_conversation_starts_one_queued_turn(alice, bob, echo_conversation):
    response = post_input(bob, echo_conversation, "hello there")
    assert response.status_code == 200
    turn = Turn.objects.get(id=response.json()["turn_id"])
    assert (turn.kind, turn.status, turn.user_id) == ("echo", "queued", bob.id)
    assert str(turn.input_message_id) == response.json()["data"]["id"]


def test_idempotent_retry_answers_the_same_turn_and_starts_nothing(alice, echo_conversation):
    first = post_input(alice, echo_conversation, "once", HTTP_IDEMPOTENCY_KEY="k-1")
    again = post_input(alice, echo_conversation, "once", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.json() == again.json()
    assert Turn.objects.count() == 1 and Message.objects.count() == 1


def test_direct_call_starts_a_turn_in_any_conversation(alice, conversation):
    call = post_input(alice, conversation, '/notes add_note {"text": "milk"}')
    assert Turn.objects.get(id=call.json()["turn_id"]).kind == "direct"
    for not_a_call in ("/me waves", "/notes add_note", "see /notes add_note {}"):
        assert "turn_id" not in post_input(alice, conversation, not_a_call).json(), not_a_call
    assert Turn.objects.count() == 1


def test_messages_carry_their_author(alice, echo_conversation):
    post_input(alice, echo_conversation, "question")
    [row] = services.turns_claim(owner="w1", limit=10)[0]
    services.turns_write(owner="w1", writes=[services.TurnWrite(row.id, finish="completed", content="answer")])
    page = client_for(alice).get(f"/messages?conversation_id={echo_conversation.id}").json()["messages"]
    assert [(m["author"], m["content"], m["sender_id"]) for m in page] == [
        ("assistant", "answer", str(alice.id)),
        ("user", "question", str(alice.id)),
    ]


def test_completed_turn_stores_answer_for_memory_and_logs_no_input_event(alice, bob, echo_conversation):
    post_input(bob, echo_conversation, "question")
    [row] = services.turns_claim(owner="w1", limit=10)[0]
    services.turns_write(
        owner="w1",
        writes=[services.TurnWrite(row.id, events=[(services.DELTA, {"text": "answ"})])],
    )
    services.turns_write(owner="w1", writes=[services.TurnWrite(row.id, finish="completed", content="answer")])
    expected = ["input", "assistant.started", "assistant.delta", "assistant.completed"]
    assert event_types(alice) == event_types(bob) == expected
    answer = Message.objects.get(author="assistant")
    assert answer.sender_id == bob.id
    completed = Event.objects.filter(recipient=alice, body__type="assistant.completed").get().body.payload
    no_model = {"model": "", "input_tokens": 0, "output_tokens": 0, "tool_calls": 0}
    assert completed["data"] == {
        "turn_id": str(row.id),
        "message_id": str(answer.id),
        "content": "answer",
        "usage": no_model,
    }
    assert completed["user_id"] == str(bob.id)
    store = OutboxEntry.objects.get(message_id=answer.id)
    assert store.user_id == bob.id and store.arguments["input_data"]["author"] == "assistant"


def test_turns_of_a_conversation_run_one_at_a_time_in_input_order(alice, workspace, echo_conversation):
    other = ConversationFactory(workspace=workspace, responder="echo")
    first = post_input(alice, echo_conversation, "first").json()["turn_id"]
    second = post_input(alice, echo_conversation, "second").json()["turn_id"]
    elsewhere = post_input(alice, other, "elsewhere").json()["turn_id"]
    claimed, _ = services.turns_claim(owner="w1", limit=10)
    assert [str(row.id) for row in claimed] == [first, elsewhere]
    assert services.turns_claim(owner="w2", limit=10)[0] == []
    services.turns_write(owner="w1", writes=[services.TurnWrite(claimed[0].id, finish="completed", content="x")])
    assert [str(row.id) for row in services.turns_claim(owner="w2", limit=10)[0]] == [second]


def test_one_user_runs_at_most_their_share_of_turns_at_once(alice, bob, workspace, settings):
    settings.CORTEX = {**settings.CORTEX, "TURN_MAX_RUNNING_PER_USER": 2}
    mine = [ConversationFactory(workspace=workspace, participants=[bob], responder="echo") for _ in range(4)]
    alices = [post_input(alice, conversation, f"a{n}").json()["turn_id"] for n, conversation in enumerate(mine)]
    bobs = post_input(bob, mine[0], "b").json()["turn_id"]  # queued behind alice's first in that conversation
    other = ConversationFactory(workspace=workspace, participants=[bob], responder="echo")
    bobs_elsewhere = post_input(bob, other, "b2").json()["turn_id"]
    claimed, _ = services.turns_claim(owner="w1", limit=10)
    assert [str(row.id) for row in claimed] == [*alices[:2], bobs_elsewhere]
    assert services.turns_claim(owner="w2", limit=10)[0] == [], "alice has her 2 running"
    assert not services.turns_due_exist(), "an idle poll takes no write lock"
    services.turns_write(owner="w1", writes=[services.TurnWrite(claimed[0].id, finish="completed", content="x")])
    # One of alice's ended: her next turn starts, and bob's (queued behind her first) too.
    assert [str(row.id) for row in services.turns_claim(owner="w2", limit=10)[0]] == [alices[2], bobs]
    assert Turn.objects.get(id=alices[3]).status == "queued"


def test_expired_lease_fails_the_turn_and_frees_the_conversation(alice, echo_conversation):
    first = post_input(alice, echo_conversation, "first").json()["turn_id"]
    second = post_input(alice, echo_conversation, "second").json()["turn_id"]
    services.turns_claim(owner="dead", limit=10)
    Turn.objects.filter(id=first).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.turns_claim(owner="w2", limit=10)[0] == []  # this claim ends the abandoned turn
    dead = Turn.objects.get(id=first)
    assert dead.status == "failed" and "lease expired" in dead.error
    assert [str(row.id) for row in services.turns_claim(owner="w2", limit=10)[0]] == [second]
    # The dead worker's late write changes nothing.
    states, _ = services.turns_write(owner="dead", writes=[services.TurnWrite(dead.id, finish="completed")])
    assert states[dead.id].lost and Turn.objects.get(id=first).status == "failed"


def test_participant_cancels_queued_turn_at_once(alice, bob, echo_conversation):
    turn_id = post_input(alice, echo_conversation, "stop me").json()["turn_id"]
    response = client_for(bob).post(f"/turns/{turn_id}/cancel")
    assert response.status_code == 202
    assert response.json()["turn"]["status"] == "cancelled"
    assert event_types(alice)[-1] == event_types(bob)[-1] == "assistant.cancelled"
    again = client_for(alice).post(f"/turns/{turn_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_cancel_of_running_turn_is_flagged_for_its_worker(alice, echo_conversation):
    turn_id = post_input(alice, echo_conversation, "long").json()["turn_id"]
    services.turns_claim(owner="w1", limit=10)
    response = client_for(alice).post(f"/turns/{turn_id}/cancel")
    assert response.status_code == 202 and response.json()["turn"]["cancel_requested"] is True
    assert services.turns_cancel_requested(owner="w1", turn_ids=[uuid.UUID(turn_id)]) == {uuid.UUID(turn_id)}
    services.turns_write(owner="w1", writes=[services.TurnWrite(uuid.UUID(turn_id), finish="cancelled")])
    assert Turn.objects.get(id=turn_id).status == "cancelled"


def test_outsider_gets_404_for_a_turn_and_changes_nothing(alice, charlie, echo_conversation):
    turn_id = post_input(alice, echo_conversation, "mine").json()["turn_id"]
    client = client_for(charlie)
    foreign = client.post(f"/turns/{turn_id}/cancel")
    missing = client.post(f"/turns/{uuid.uuid4()}/cancel")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert client.get(f"/turns/{turn_id}").status_code == 404
    turn = Turn.objects.get(id=turn_id)
    assert turn.status == "queued" and turn.cancel_requested_at is None
    assert client_for(alice).get(f"/turns/{turn_id}").json()["turn"]["status"] == "queued"


def test_reject_policy_refuses_an_input_while_a_turn_is_open_and_stores_nothing(alice, bob, echo_conversation):
    echo_conversation.turn_policy = "reject"
    echo_conversation.save(update_fields=["turn_policy"])
    first = post_input(alice, echo_conversation, "first")
    assert first.status_code == 200
    before = (Message.objects.count(), Event.objects.count(), OutboxEntry.objects.count(), Turn.objects.count())
    refused = post_input(bob, echo_conversation, "second")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "turn_in_progress"
    after = (Message.objects.count(), Event.objects.count(), OutboxEntry.objects.count(), Turn.objects.count())
    assert after == before, "nothing of the refused input was stored"
    claimed, _ = services.turns_claim(owner="w1", limit=10)
    assert post_input(bob, echo_conversation, "while running").status_code == 409
    services.turns_write(owner="w1", writes=[services.TurnWrite(claimed[0].id, finish="completed", content="x")])
    assert post_input(bob, echo_conversation, "now").status_code == 200


def test_interrupt_policy_cancels_older_open_turns_and_the_new_one_runs_next(alice, bob, echo_conversation):
    echo_conversation.turn_policy = "interrupt"
    echo_conversation.save(update_fields=["turn_policy"])
    running = post_input(alice, echo_conversation, "first").json()["turn_id"]
    services.turns_claim(owner="w1", limit=10)
    queued = post_input(alice, echo_conversation, "second").json()["turn_id"]
    newest = post_input(bob, echo_conversation, "third").json()["turn_id"]
    assert Turn.objects.get(id=queued).status == "cancelled", "a queued one ends at once"
    flagged = Turn.objects.get(id=running)
    assert flagged.cancel_requested_at is not None and flagged.cancel_reason == "interrupted"
    assert services.turns_claim(owner="w2", limit=10)[0] == [], "the interrupted turn still holds the conversation"
    services.turns_write(owner="w1", writes=[services.TurnWrite(flagged.id, finish="cancelled")])
    cancelled = [
        event.body.payload["data"]
        for event in Event.objects.filter(recipient=bob, body__type="assistant.cancelled").select_related("body")
    ]
    assert sorted(data["turn_id"] for data in cancelled) == sorted([running, queued])
    assert all(data["reason"] == "interrupted" for data in cancelled)
    assert [str(row.id) for row in services.turns_claim(owner="w2", limit=10)[0]] == [newest]


def test_personal_context_only_for_a_single_participant(alice, bob, workspace):
    client = client_for(alice)
    body = {"workspace_id": str(workspace.id), "topic": "t", "responder": "llm", "context_scope": "personal"}
    refused = client.post("/config/conversation", {**body, "participant_ids": [str(bob.id)]}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
    alone = client.post("/config/conversation", body, format="json").json()["conversation"]
    assert alone["context_scope"] == "personal" and alone["turn_policy"] == "queue"
    joined = client.patch(f"/config/conversation/{alone['id']}", {"participant_ids": [str(bob.id)]}, format="json")
    assert joined.json()["conversation"]["context_scope"] == "conversation"
    again = client.patch(f"/config/conversation/{alone['id']}", {"context_scope": "personal"}, format="json")
    assert again.status_code == 409


def test_a_deactivated_users_queued_turn_fails_at_the_claim_without_starting(alice, bob, echo_conversation):
    running = post_input(alice, echo_conversation, "first").json()["turn_id"]
    services.turns_claim(owner="w1", limit=10)
    queued = post_input(bob, echo_conversation, '/notes add_note {"title": "x"}').json()["turn_id"]
    assert Turn.objects.get(id=queued).direct_call == {
        "expert": "notes",
        "tool": "add_note",
        "arguments": '{"title": "x"}',
    }
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    services.turns_write(owner="w1", writes=[services.TurnWrite(uuid.UUID(running), finish="completed", content="x")])
    assert services.turns_claim(owner="w1", limit=10)[0] == []
    ended = Turn.objects.get(id=queued)
    assert ended.status == "failed" and ended.started_at is None and not ended.head
    types = [
        e.body.type
        for e in Event.objects.filter(recipient=alice).select_related("body")
        if e.body.payload["data"].get("turn_id") == queued
    ]
    assert types == ["assistant.failed"]


def test_a_capped_users_queue_does_not_hold_up_anyone_else(alice, bob, workspace, settings):
    settings.CORTEX = {**settings.CORTEX, "TURN_MAX_RUNNING_PER_USER": 1}
    busy = ConversationFactory(workspace=workspace, responder="echo")
    for n in range(30):
        post_input(alice, ConversationFactory(workspace=workspace, responder="echo") if n % 3 else busy, f"a{n}")
    services.turns_claim(owner="w1", limit=1)
    other = ConversationFactory(workspace=workspace, participants=[bob], responder="echo")
    bobs = post_input(bob, other, "b").json()["turn_id"]
    assert services.turns_due_exist()
    assert [str(row.id) for row in services.turns_claim(owner="w2", limit=64)[0]] == [bobs]
    assert not services.turns_due_exist(), "alice's queue waits behind her cap"
    heads = Turn.objects.filter(head=True, status__in=["queued", "running"])
    assert (
        heads.count() == Turn.objects.filter(status__in=["queued", "running"]).values("conversation").distinct().count()
    )


def test_creating_conversations_is_rate_limited_per_user_and_listing_is_not(alice, bob, workspace, monkeypatch):
    from common.web.throttles import GcraScopedRateThrottle

    monkeypatch.setitem(GcraScopedRateThrottle.THROTTLE_RATES, "conversation", "2/min")
    client = client_for(alice)
    body = {"workspace_id": str(workspace.id), "topic": "t"}
    assert [client.post("/config/conversation", body, format="json").status_code for _ in range(3)] == [201, 201, 429]
    assert client.post("/config/conversation", body, format="json").json()["error"]["code"] == "throttled"
    assert client.get("/config/conversation").status_code == 200
    own = client_for(bob).post("/config/workspace", {"name": "B"}, format="json").json()["workspace"]
    other = client_for(bob).post("/config/conversation", {"workspace_id": own["id"], "topic": "t"}, format="json")
    assert other.status_code == 201, "per user: bob has his own allowance"
