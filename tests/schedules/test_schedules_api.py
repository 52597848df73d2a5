"""Schedules through the API and the claim against the real database: alice owns the conversation,
bob participates, charlie is an outsider. The claim is called as the turn worker calls it, with the
time it runs at; the worker itself: test_schedules_e2e.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import client_for
from schedules import services
from schedules.models import Schedule
from streaming.models import Event
from workspaces.models import Message

pytestmark = pytest.mark.django_db


def create(user, conversation, **overrides):
    body = {
        "conversation_id": str(conversation.id),
        "content": "Summarise my tickets",
        "cron": "0 8 * * 1-5",
        "timezone": "Europe/Berlin",
        **overrides,
    }
    return client_for(user).post("/schedules", body, format="json")


def events_of(user) -> list[tuple[str, dict]]:
    rows = Event.objects.filter(recipient=user).order_by("seq").select_related("body")
    return [(row.body.type, row.body.payload["data"]) for row in rows]


def test_participant_creates_a_schedule_with_its_next_run(bob, conversation):
    response = create(bob, conversation)
    assert response.status_code == 201, response.json()
    schedule = response.json()["schedule"]
    assert set(schedule) >= {
        "id",
        "conversation_id",
        "content",
        "cron",
        "timezone",
        "active",
        "next_run_at",
        "last_run_at",
        "last_input_id",
    }
    assert schedule["active"] is True and schedule["last_run_at"] is None
    stored = Schedule.objects.get(id=schedule["id"])
    assert stored.owner == bob and stored.next_run_at > timezone.now()
    assert stored.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")).hour == 8


def test_outsider_gets_404_for_a_conversation_they_do_not_take_part_in(charlie, conversation):
    response = create(charlie, conversation)
    assert response.status_code == 404
    assert Schedule.objects.count() == 0


def test_another_persons_schedule_is_a_404_on_every_verb(alice, bob, charlie, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    for user in (alice, charlie):
        client = client_for(user)
        assert client.get(f"/schedules/{schedule_id}").status_code == 404
        assert client.patch(f"/schedules/{schedule_id}", {"active": False}, format="json").status_code == 404
        assert client.post(f"/schedules/{schedule_id}/run").status_code == 404
        assert client.delete(f"/schedules/{schedule_id}").status_code == 404
        assert client.get("/schedules").json() == {"schedules": []}
    assert Schedule.objects.get(id=schedule_id).active is True


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "0 8 * *"}, "cron"),
        ({"cron": "every morning"}, "cron"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"cron": "* * * * *"}, "cron"),  # every minute: closer than SCHEDULE_MIN_INTERVAL_SECONDS
        ({"content": "   "}, "content"),
    ],
)
def test_bad_cron_timezone_interval_or_content_is_a_400_with_fields(bob, conversation, overrides, field):
    response = create(bob, conversation, **overrides)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_at_most_schedules_per_user(bob, conversation, settings):
    settings.SCHEDULES_PER_USER = 2
    assert create(bob, conversation).status_code == 201
    assert create(bob, conversation).status_code == 201
    response = create(bob, conversation)
    assert response.status_code == 409
    assert Schedule.objects.filter(owner=bob).count() == 2


def test_patch_changes_timing_and_pausing_clears_the_next_run(bob, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    client = client_for(bob)
    paused = client.patch(f"/schedules/{schedule_id}", {"active": False}, format="json").json()["schedule"]
    assert paused["active"] is False and paused["next_run_at"] is None
    resumed = client.patch(
        f"/schedules/{schedule_id}", {"active": True, "cron": "30 9 * * *", "timezone": "UTC"}, format="json"
    ).json()["schedule"]
    assert resumed["next_run_at"].endswith("09:30:00Z")
    assert client.delete(f"/schedules/{schedule_id}").status_code == 204
    assert not Schedule.objects.filter(id=schedule_id).exists()


def test_run_now_posts_the_content_as_the_owners_input_with_the_schedule_id(bob, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    response = client_for(bob).post(f"/schedules/{schedule_id}/run")
    assert response.status_code == 202
    message = Message.objects.get(id=response.json()["input_id"])
    assert message.sender == bob and message.conversation == conversation
    assert message.metadata == {"schedule_id": schedule_id}
    assert Schedule.objects.get(id=schedule_id).last_input_id == message.id


def _due(schedule_id, at):
    Schedule.objects.filter(id=schedule_id).update(next_run_at=at)


def test_a_due_schedule_runs_once_per_due_time(bob, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    due = timezone.now() - timedelta(seconds=5)
    _due(schedule_id, due)
    services.schedules_run_due(now=timezone.now())
    services.schedules_run_due(now=timezone.now())  # a second claimer finds nothing due
    messages = Message.objects.filter(metadata__schedule_id=schedule_id)
    assert messages.count() == 1
    schedule = Schedule.objects.get(id=schedule_id)
    assert schedule.last_input_id == messages.get().id and schedule.next_run_at > timezone.now()
    # Everyone in the conversation sees the input (alice too); the schedule's events: none.
    assert [kind for kind, _ in events_of(bob)] == ["input"]


def test_a_run_missed_within_the_catch_up_window_runs_once(bob, conversation, settings):
    schedule_id = create(bob, conversation, cron="0 * * * *", timezone="UTC").json()["schedule"]["id"]
    now = timezone.now()
    _due(schedule_id, now - timedelta(minutes=50))  # down for 50 minutes: within the hour
    services.schedules_run_due(now=now)
    assert Message.objects.filter(metadata__schedule_id=schedule_id).count() == 1
    assert [kind for kind, _ in events_of(bob)] == ["input"]


def test_a_run_missed_beyond_the_catch_up_window_is_skipped(bob, conversation, settings):
    settings.SCHEDULE_CATCHUP_SECONDS = 600
    schedule_id = create(bob, conversation, cron="0 8 * * *", timezone="UTC").json()["schedule"]["id"]
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    _due(schedule_id, now.replace(hour=8))  # four hours late, the window is ten minutes
    services.schedules_run_due(now=now)
    assert not Message.objects.filter(metadata__schedule_id=schedule_id).exists()
    ((kind, data),) = events_of(bob)
    assert kind == "schedule.skipped" and data["schedule_id"] == schedule_id and data["reason"] == "missed"
    assert data["due_at"].startswith(now.strftime("%Y-%m-%dT08:00:00"))
    schedule = Schedule.objects.get(id=schedule_id)
    assert schedule.active and schedule.next_run_at > now


def test_an_owner_who_left_the_conversation_pauses_the_schedule(bob, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    conversation.participants.remove(bob)
    _due(schedule_id, timezone.now() - timedelta(seconds=1))
    services.schedules_run_due()
    schedule = Schedule.objects.get(id=schedule_id)
    assert schedule.active is False and schedule.next_run_at is None and schedule.paused_reason
    assert not Message.objects.filter(metadata__schedule_id=schedule_id).exists()
    ((kind, data),) = events_of(bob)
    assert kind == "schedule.paused" and data["schedule_id"] == schedule_id


def test_an_inactive_owner_pauses_the_schedule_without_an_event(bob, conversation):
    schedule_id = create(bob, conversation).json()["schedule"]["id"]
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    _due(schedule_id, timezone.now() - timedelta(seconds=1))
    services.schedules_run_due()
    assert Schedule.objects.get(id=schedule_id).active is False
    assert events_of(bob) == []  # inactive users are never recipients
