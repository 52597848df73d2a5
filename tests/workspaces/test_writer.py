"""Group commit: many inputs in one transaction, each with its own outcome, and the writer thread
that makes the batches (against the real database, with committed data)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.http import Http404

from common.errors import CortexError, ErrorCode
from streaming.models import Event
from workspaces.models import IdempotencyRecord, Message
from workspaces.services import InputRequest, messages_create
from workspaces.writer import InputWriter

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_answers_each_input_alone_and_commits_the_accepted_ones(alice, bob, charlie, conversation):
    outcomes = messages_create(
        requests=[
            InputRequest(sender=bob, content="in the conversation", conversation_id=conversation.id),
            InputRequest(sender=charlie, content="not a participant", conversation_id=conversation.id),
            InputRequest(sender=alice, content="no such conversation", conversation_id=uuid.uuid4()),
            InputRequest(sender=alice, content="first", idempotency_key="k"),
            InputRequest(sender=alice, content="first", idempotency_key="k"),
            InputRequest(sender=alice, content="other body", idempotency_key="k"),
            InputRequest(sender=charlie, content="same key, other user", idempotency_key="k"),
        ]
    )
    assert isinstance(outcomes[1], Http404) and isinstance(outcomes[2], Http404)
    assert isinstance(outcomes[5], CortexError) and outcomes[5].code is ErrorCode.IDEMPOTENCY_CONFLICT
    (posted, created), (first, first_created), (retry, retry_created) = outcomes[0], outcomes[3], outcomes[4]
    assert created and first_created and not retry_created and retry == first
    assert outcomes[6][1] is True and outcomes[6][0]["data"]["id"] != first["data"]["id"]
    assert Message.objects.count() == 3
    assert IdempotencyRecord.objects.count() == 2
    # Both participants got the conversation's input, each with a gap-free sequence of their own.
    assert sorted(Event.objects.filter(body__message_id=posted["data"]["id"]).values_list("seq", flat=True)) == [1, 1]
    assert list(Event.objects.filter(recipient=alice).order_by("seq").values_list("seq", flat=True)) == [1, 2]


def test_a_batch_replays_a_key_committed_by_an_earlier_batch(alice):
    [(first, _)] = messages_create(requests=[InputRequest(sender=alice, content="once", idempotency_key="r")])
    [(again, created)] = messages_create(requests=[InputRequest(sender=alice, content="once", idempotency_key="r")])
    assert again == first and not created and Message.objects.count() == 1


def test_the_writer_thread_commits_concurrent_inputs_before_answering(alice, bob, conversation, settings):
    settings.CORTEX = {**settings.CORTEX, "INPUT_GROUP_COMMIT": True, "INPUT_BATCH_SIZE": 8}
    writer = InputWriter()

    async def send_all() -> list:
        requests = [
            InputRequest(sender=alice if n % 2 else bob, content=f"n{n}", conversation_id=conversation.id)
            for n in range(40)
        ]
        return await asyncio.gather(*(writer.submit(request) for request in requests), return_exceptions=True)

    outcomes = asyncio.run(send_all())
    assert all(isinstance(outcome, tuple) and outcome[1] for outcome in outcomes), outcomes
    ids = {outcome[0]["data"]["id"] for outcome in outcomes}
    assert set(map(str, Message.objects.values_list("id", flat=True))) == ids
    for user in (alice, bob):
        assert list(Event.objects.filter(recipient=user).order_by("seq").values_list("seq", flat=True)) == list(
            range(1, 41)
        )


def test_the_writer_answers_a_refused_input_with_its_error(charlie, conversation, settings):
    settings.CORTEX = {**settings.CORTEX, "INPUT_GROUP_COMMIT": True}
    writer = InputWriter()
    request = InputRequest(sender=charlie, content="outsider", conversation_id=conversation.id)
    with pytest.raises(Http404):
        asyncio.run(writer.submit(request))
    assert Message.objects.count() == 0


def test_a_request_cancelled_while_queued_leaves_the_others_of_its_batch_answered(alice, settings):
    """A client that leaves mid-write cancels its request; the writer still answers the rest of the
    batch (it used to set a result on the cancelled future and die, leaving them waiting)."""
    settings.CORTEX = {**settings.CORTEX, "INPUT_GROUP_COMMIT": True}
    writer = InputWriter()

    async def send_all() -> list:
        tasks = [asyncio.create_task(writer.submit(InputRequest(sender=alice, content=f"n{n}"))) for n in range(10)]
        await asyncio.sleep(0)  # every request is queued and waiting for its answer
        tasks[3].cancel()
        others = [task for n, task in enumerate(tasks) if n != 3]
        done = await asyncio.wait_for(asyncio.gather(*others), timeout=20)
        again = await asyncio.wait_for(writer.submit(InputRequest(sender=alice, content="after")), timeout=20)
        return [*done, again]

    outcomes = asyncio.run(send_all())
    assert len(outcomes) == 10 and all(created for _response, created in outcomes)
    # The cancelled one was queued before its client left: it is stored, only its answer was dropped.
    assert Message.objects.filter(sender=alice).count() == 11
