"""Sequence allocation under concurrent writers whose recipient sets overlap."""

from __future__ import annotations

import itertools

import pytest

from accounts.models import User
from streaming.models import Event, EventCursor
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from tests.workspaces.test_concurrency import run_concurrently
from workspaces.services import message_create


@pytest.mark.django_db
def test_every_new_user_gets_a_cursor_at_creation():
    user = UserFactory()
    admin = User.objects.create_superuser(email="root@example.com", password="x" * 12)
    assert EventCursor.objects.filter(user_id__in=[user.id, admin.id], last_seq=0).count() == 2


@pytest.mark.django_db(transaction=True)
def test_overlapping_conversations_written_concurrently_never_fail_and_stay_gap_free():
    # Each conversation shares members with the next, so writers lock overlapping cursor sets.
    users = [UserFactory() for _ in range(4)]
    owner = users[0]
    workspace = WorkspaceFactory(owner=owner)
    conversations = [
        ConversationFactory(workspace=workspace, participants=[users[i], users[(i + 1) % 4]]) for i in range(4)
    ]
    jobs = itertools.cycle(conversations)
    per_thread = 10

    def worker():
        conversation = next(jobs)
        for n in range(per_thread):
            message_create(sender=owner, content=f"m{n}", conversation=conversation)
        return True

    results = run_concurrently(worker, count=4)
    assert results == [True] * 4, results
    for user in users:
        seqs = list(Event.objects.filter(recipient=user).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1)), (user, seqs)
    assert len(Event.objects.filter(recipient=owner)) == 4 * per_thread


def test_a_user_made_without_signals_gets_a_cursor_and_a_gap_free_log_on_first_event(alice, conversation):
    [late] = User.objects.bulk_create([User(email="late@example.com")])  # no post_save: no cursor
    assert not EventCursor.objects.filter(user=late).exists()
    conversation.participants.add(late)
    message_create(sender=alice, content="one", conversation=conversation)
    message_create(sender=alice, content="two", conversation=conversation)
    assert list(Event.objects.filter(recipient=late).order_by("seq").values_list("seq", flat=True)) == [1, 2]
    assert EventCursor.objects.get(user=late).last_seq == 2
