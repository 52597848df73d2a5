"""Webhooks through the API and their services against the real database: bob owns webhooks,
charlie is an outsider; alice's conversation with bob makes events in bob's log. The delivery
worker itself: test_delivery_e2e.py."""

from __future__ import annotations

import pytest
from django.db import transaction

from conftest import client_for
from streaming.models import Event
from webhooks import services
from webhooks.models import Delivery, Webhook
from workspaces.services import message_create

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/cortex"


@pytest.fixture(autouse=True)
def _allowed(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com", "127.0.0.1:*"]


def register(user, **overrides):
    return client_for(user).post("/webhooks", {"url": URL, "events": ["*"], **overrides}, format="json")


def test_the_secret_is_shown_once_and_rotation_makes_a_new_one(bob):
    response = register(bob, description="phone")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["webhook"]["active"] is True
    webhook_id = body["webhook"]["id"]
    client = client_for(bob)
    for shown in (client.get(f"/webhooks/{webhook_id}").json(), client.get("/webhooks").json()):
        assert body["secret"] not in str(shown)
    rotated = client.post(f"/webhooks/{webhook_id}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != body["secret"]
    assert Webhook.objects.get(id=webhook_id).secret == rotated.json()["secret"]


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.example.com/hook",  # not listed
        "http://hooks.example.com/cortex",  # not https (outside debug)
        "https://10.0.0.1/hook",
        "https://user:pw@hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "https://hooks.example.com:8443/hook",  # a name entry allows 80 and 443 only
    ],
)
def test_urls_outside_the_policy_are_a_400(bob, url):
    response = register(bob, url=url)
    assert response.status_code == 400
    assert "url" in response.json()["error"]["fields"]
    assert not Webhook.objects.exists()


def test_plain_http_is_allowed_to_loopback(bob):
    assert register(bob, url="http://127.0.0.1:8080/hook").status_code == 201


def test_outsider_gets_404_on_every_verb(bob, charlie):
    webhook_id = register(bob).json()["webhook"]["id"]
    client = client_for(charlie)
    assert client.get(f"/webhooks/{webhook_id}").status_code == 404
    assert client.patch(f"/webhooks/{webhook_id}", {"active": False}, format="json").status_code == 404
    assert client.post(f"/webhooks/{webhook_id}/rotate-secret").status_code == 404
    assert client.get(f"/webhooks/{webhook_id}/deliveries").status_code == 404
    assert client.delete(f"/webhooks/{webhook_id}").status_code == 404
    assert client.get("/webhooks").json() == {"webhooks": []}
    assert Webhook.objects.get(id=webhook_id).active is True


def test_at_most_webhooks_per_user(bob, settings):
    settings.WEBHOOKS_PER_USER = 1
    assert register(bob).status_code == 201
    assert register(bob).status_code == 409


def test_one_delivery_per_matching_event_written_with_the_event(alice, bob, conversation):
    everything = register(bob).json()["webhook"]["id"]
    completed_only = register(bob, events=["assistant.completed"]).json()["webhook"]["id"]
    message_create(sender=alice, content="hello", conversation=conversation)
    message_create(sender=bob, content="hi", conversation=conversation)
    seqs = list(Event.objects.filter(recipient=bob).order_by("seq").values_list("seq", flat=True))
    deliveries = Delivery.objects.filter(webhook_id=everything).order_by("event_seq")
    assert [d.event_seq for d in deliveries] == seqs == [1, 2]
    assert [d.type for d in deliveries] == ["input", "input"]
    assert not Delivery.objects.filter(webhook_id=completed_only).exists()
    assert Webhook.objects.get(id=everything).next_attempt_at is not None  # due for the worker
    assert Webhook.objects.get(id=completed_only).next_attempt_at is None
    assert not Delivery.objects.filter(webhook__owner=alice).exists()  # alice has no webhook


def test_an_event_that_rolls_back_leaves_no_delivery(bob, conversation):
    register(bob)
    with pytest.raises(RuntimeError), transaction.atomic():
        message_create(sender=bob, content="never", conversation=conversation)
        raise RuntimeError("rolled back")
    assert not Event.objects.exists() and not Delivery.objects.exists()


def test_deliveries_log_pages_newest_first_and_retry_makes_one_due(bob, conversation):
    webhook_id = register(bob).json()["webhook"]["id"]
    for n in range(5):
        message_create(sender=bob, content=f"m{n}", conversation=conversation)
    client = client_for(bob)
    first = client.get(f"/webhooks/{webhook_id}/deliveries", {"limit": 3}).json()
    assert [item["event_id"] for item in first["items"]] == ["5", "4", "3"]
    assert first["items"][0]["status"] == "pending" and first["items"][0]["attempts"] == 0
    second = client.get(f"/webhooks/{webhook_id}/deliveries", {"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [item["event_id"] for item in second["items"]] == ["2", "1"] and second["next_cursor"] is None
    # As the worker records them: delivered, then retried by hand.
    claimed = services.webhooks_claim(owner="w", limit=10)
    assert [c.event_seq for c in claimed] == [1]
    services.attempts_record(
        owner="w",
        attempts=[
            services.Attempt(delivery_id=claimed[0].delivery_id, webhook_id=claimed[0].webhook_id, status_code=200)
        ],
    )
    delivered = Delivery.objects.get(id=claimed[0].delivery_id)
    assert delivered.status == "delivered" and delivered.attempts == 1
    retried = client.post(f"/webhooks/{webhook_id}/deliveries/{delivered.id}/retry")
    assert retried.status_code == 202 and retried.json()["item"]["status"] == "pending"
    assert client_for(bob).post(f"/webhooks/{webhook_id}/deliveries/{delivered.id}x/retry").status_code == 404


def test_a_failed_attempt_backs_off_and_a_day_of_them_fails_the_delivery(bob, conversation, settings):
    webhook_id = register(bob).json()["webhook"]["id"]
    message_create(sender=bob, content="m", conversation=conversation)
    (claimed,) = services.webhooks_claim(owner="w", limit=10)
    assert services.webhooks_claim(owner="other", limit=10) == []  # leased
    attempt = services.Attempt(
        delivery_id=claimed.delivery_id, webhook_id=claimed.webhook_id, status_code=503, error="HTTP 503"
    )
    services.attempts_record(owner="w", attempts=[attempt])
    delivery = Delivery.objects.get(id=claimed.delivery_id)
    webhook = Webhook.objects.get(id=webhook_id)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 503
    assert webhook.next_attempt_at == delivery.next_attempt_at and webhook.failing_since is not None
    assert services.webhooks_claim(owner="w", limit=10) == []  # not due before its backoff
    Delivery.objects.filter(id=delivery.id).update(created_at=delivery.created_at.replace(year=2000))
    Webhook.objects.filter(id=webhook_id).update(failing_since=webhook.failing_since.replace(year=2000))
    services.attempts_record(owner="w", attempts=[attempt])
    assert Delivery.objects.get(id=delivery.id).status == "failed"
    webhook = Webhook.objects.get(id=webhook_id)
    assert webhook.active is False and webhook.disabled_reason and webhook.next_attempt_at is None
    # Reactivated by its owner: failures forgotten.
    client_for(bob).patch(f"/webhooks/{webhook_id}", {"active": True}, format="json")
    assert Webhook.objects.get(id=webhook_id).failing_since is None


def test_backoff_grows_exponentially_with_jitter_and_is_capped(settings):
    settings.WEBHOOK_BACKOFF_BASE_MS = 1000
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 60
    for attempts, expected in ((1, 1), (2, 2), (3, 4), (6, 32), (12, 60)):
        assert expected * 0.8 <= services.backoff_seconds(attempts) <= expected * 1.2


def test_the_account_export_lists_webhooks_and_schedules_without_the_secret(bob, conversation):
    from account_data.export import _exported, _page
    from schedules.models import Schedule

    body = register(bob).json()
    client_for(bob).post(
        "/schedules",
        {"conversation_id": str(conversation.id), "content": "c", "cron": "0 8 * * *", "timezone": "UTC"},
        format="json",
    )
    webhooks = _exported("webhook", _page("webhook", Webhook.objects.filter(owner=bob), None))
    assert [row["id"] for row in webhooks] == [body["webhook"]["id"]]
    assert body["secret"] not in str(webhooks) and "secret" not in webhooks[0]
    schedules = _exported("schedule", _page("schedule", Schedule.objects.filter(owner=bob), None))
    assert schedules[0]["cron"] == "0 8 * * *" and schedules[0]["conversation_id"] == str(conversation.id)
