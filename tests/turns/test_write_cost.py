"""How many statements a turn's claim, its `tool.call` write and its ending take, pinned (issue 29:
the worker writes its turns on one database thread, and a resumed turn's `tool.call` waited behind
the previous turn's ending). Counted rather than timed: the same on any machine at any load. Two
turns in two conversations take the same statements as one: nothing is per turn or per conversation."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conftest import client_for
from streaming.models import Event
from tests.factories import ConversationFactory
from turns import services
from turns.models import Turn
from turns.services import TurnWrite
from usage.models import TurnUsage, UsageTotal
from usage.services import UsageDelta
from workspaces.models import Message

pytestmark = pytest.mark.django_db

OWNER = "worker-1"
# (claim, tool.call write, ending) on each database: the ending's are the locks and the lease
# renewal with the turns' recipients (PostgreSQL: the conversations' lock first), the usage row (a
# read and an insert), the totals (one upsert), the answers, their memory outbox rows, the turns'
# state, the next heads, the unparking (SQLite: the running counts, then an UPDATE), and the log's
# three statements (sequences, bodies, rows).
STATEMENTS = {"sqlite": (9, 4, 13), "postgresql": (7, 4, 13)}


def post(user, conversation, content: str) -> uuid.UUID:
    response = client_for(user).post(
        "/input", {"content": content, "conversation_id": str(conversation.id)}, format="json"
    )
    assert response.status_code == 200, response.content
    return uuid.UUID(response.json()["turn_id"])


def statements(call) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        result = call()
    sql = [query["sql"] for query in captured.captured_queries]
    return result, [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def test_a_claim_a_tool_call_and_an_ending_take_a_fixed_number_of_statements(alice, bob, workspace):
    places = [
        ConversationFactory(workspace=workspace, topic=f"T{n}", participants=[bob], responder="echo") for n in range(2)
    ]
    firsts = [post(alice, place, "hi") for place in places]
    nexts = [post(alice, place, "next") for place in places]
    (rows, _), claim = statements(lambda: services.turns_claim(owner=OWNER, limit=10))
    assert sorted(row.id for row in rows) == sorted(firsts)

    calls = [
        TurnWrite(row.id, events=[("tool.call", {"call_id": "c1", "name": "notes__add", "arguments": {}})])
        for row in rows
    ]
    (states, _), tool_call = statements(lambda: services.turns_write(owner=OWNER, writes=calls))
    assert not any(state.lost for state in states.values())

    endings = [
        TurnWrite(
            row.id,
            events=[("assistant.delta", {"text": "answer"})],
            finish="completed",
            content="answer",
            usage=UsageDelta(model="m", input_tokens=10, output_tokens=5, tool_calls=1),
        )
        for row in rows
    ]
    (states, _), ending = statements(lambda: services.turns_write(owner=OWNER, writes=endings))
    assert not any(state.lost for state in states.values())

    counts = (len(claim), len(tool_call), len(ending))
    assert counts == STATEMENTS[connection.vendor], "\n\n".join(["\n".join(s) for s in (claim, tool_call, ending)])
    # What the ending wrote (the statements above did all of it).
    assert set(Turn.objects.filter(id__in=firsts).values_list("status", "head")) == {("completed", False)}
    assert set(Turn.objects.filter(id__in=nexts).values_list("status", "head")) == {("queued", True)}
    assert Message.objects.filter(author="assistant", content="answer").count() == 2
    assert TurnUsage.objects.filter(turn_id__in=firsts, tool_calls=1).count() == 2
    assert set(UsageTotal.objects.values_list("scope", "tokens", "turns")) == {("user", 30, 2), ("workspace", 30, 2)}
    for user in (alice, bob):
        types = [e.body.type for e in Event.objects.filter(recipient=user).order_by("seq").select_related("body")]
        assert types.count("tool.call") == 2 and types.count("assistant.completed") == 2


def test_a_write_by_a_worker_that_lost_the_lease_is_refused_and_renews_nothing(alice, bob, workspace):
    place = ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")
    post(alice, place, "hi")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    before = Turn.objects.get(id=row.id)
    events = Event.objects.count()
    states, live = services.turns_write(
        owner="another-worker", writes=[TurnWrite(row.id, finish="completed", content="x")]
    )
    assert states[row.id].lost and live == []
    after = Turn.objects.get(id=row.id)
    assert (after.status, after.lease_owner, after.lease_expires_at) == ("running", OWNER, before.lease_expires_at)
    assert Event.objects.count() == events and not Message.objects.filter(author="assistant").exists()
