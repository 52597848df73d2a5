"""The stream's one read at open (`selectors.position_if_may_stream`) answers as the two reads it
replaces (`user_may_stream`, `log_position`), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from streaming import selectors
from streaming.models import EventCursor
from workspaces.services import message_create


def both(user, issued_at):
    old = (
        selectors.log_position(user_id=user.id)
        if selectors.user_may_stream(user_id=user.id, issued_at=issued_at)
        else None
    )
    return selectors.position_if_may_stream(user_id=user.id, issued_at=issued_at), old


@pytest.mark.django_db
def test_a_user_without_events_streams_from_the_start(alice):
    new, old = both(alice, timezone.now())
    assert new == old == selectors.LogPosition(0, 0)


@pytest.mark.django_db
def test_the_head_and_the_retention_floor_are_read(alice):
    for n in range(3):
        message_create(sender=alice, content=f"m{n}")
    EventCursor.objects.filter(user=alice).update(pruned_through=1)
    new, old = both(alice, timezone.now())
    assert new == old == selectors.LogPosition(3, 1)


@pytest.mark.django_db
def test_an_inactive_user_may_not_stream(alice):
    message_create(sender=alice, content="m")
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert both(alice, timezone.now()) == (None, None)


@pytest.mark.django_db
def test_a_credential_issued_before_the_last_logout_may_not_stream_and_one_after_may(alice):
    ended = timezone.now().replace(microsecond=0)  # a whole second, as an access token's `iat`
    alice.sessions_ended_at = ended
    alice.save(update_fields=["sessions_ended_at"])
    assert both(alice, ended - timedelta(microseconds=1)) == (None, None)
    assert both(alice, ended) == (selectors.LogPosition(0, 0),) * 2
    assert both(alice, ended + timedelta(seconds=1)) == (selectors.LogPosition(0, 0),) * 2
    alice.sessions_ended_at = ended + timedelta(microseconds=500)
    alice.save(update_fields=["sessions_ended_at"])
    assert both(alice, ended) == (None, None)
    assert both(alice, ended + timedelta(microseconds=500))[0] == selectors.LogPosition(0, 0)
