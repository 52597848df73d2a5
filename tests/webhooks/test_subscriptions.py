"""The event append reads, with the seqs it reserves, whether a recipient has a webhook
(`EventCursor.subscriptions`): nothing more is done for people without one, and no delivery is
missed for people with one, whichever process or thread made it."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streaming.models import Event, EventCursor
from tests.factories import UserFactory
from tests.workspaces.test_concurrency import run_concurrently
from webhooks import services
from webhooks.models import Delivery, Webhook
from workspaces.services import message_create

URL = "https://hooks.example.com/cortex"


@pytest.fixture(autouse=True)
def _allowed(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]


def subscriptions(user) -> int:
    return EventCursor.objects.get(user=user).subscriptions


@pytest.mark.django_db
def test_an_input_of_someone_without_a_webhook_never_reads_the_webhooks(alice):
    with CaptureQueriesContext(connection) as queries:
        message_create(sender=alice, content="hello")
    assert not [q["sql"] for q in queries.captured_queries if "webhooks_" in q["sql"]]
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_the_count_follows_creation_deactivation_and_deletion(alice):
    assert subscriptions(alice) == 0
    first, _ = services.webhook_create(owner=alice, url=URL, events=["input"])
    second, _ = services.webhook_create(owner=alice, url=URL, events=["*"])
    assert subscriptions(alice) == 2
    message_create(sender=alice, content="one")
    assert Delivery.objects.filter(webhook=first).count() == 1
    services.webhook_update(webhook=first, active=False)
    assert subscriptions(alice) == 1
    services.webhook_delete(webhook=second)
    assert subscriptions(alice) == 0
    message_create(sender=alice, content="two")
    assert Delivery.objects.count() == 1
    services.webhook_update(webhook=first, active=True)
    assert subscriptions(alice) == 1
    message_create(sender=alice, content="three")
    assert Delivery.objects.filter(webhook=first).count() == 2


@pytest.mark.django_db
def test_a_webhook_the_worker_deactivated_is_uncounted_by_the_next_append(alice):
    webhook, _ = services.webhook_create(owner=alice, url=URL, events=["*"])
    Webhook.objects.filter(pk=webhook.pk).update(active=False)  # as attempts_record does, without the cursor
    assert subscriptions(alice) == 1  # too high is allowed (a query too many, never a delivery lost)
    message_create(sender=alice, content="hello")
    assert subscriptions(alice) == 0 and not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_webhooks_made_while_others_append_miss_no_event_after_them():
    """Threads (their own connections) append inputs while others create webhooks: each webhook
    has a delivery for every event of the log from some seq on (the first after it committed),
    with no gap, so no append ever read a stale count."""
    owner = UserFactory()
    made: list[Webhook] = []
    stop = threading.Event()

    def appender() -> int:
        count = 0
        while not stop.is_set() and count < 60:
            message_create(sender=owner, content=f"input {count}")
            count += 1
        return count

    def creator() -> None:
        try:
            for _ in range(4):
                made.append(services.webhook_create(owner=owner, url=URL, events=["input"])[0])
        finally:
            stop.set()

    roles = iter([creator, appender, appender])
    lock = threading.Lock()

    def work() -> int | None:
        with lock:
            role = next(roles)
        return role()

    results = run_concurrently(work, count=3)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(made) == 4
    log = sorted(Event.objects.filter(recipient=owner).values_list("seq", flat=True))
    assert log
    for webhook in made:
        seqs = sorted(Delivery.objects.filter(webhook=webhook).values_list("event_seq", flat=True))
        if seqs:
            assert seqs == [seq for seq in log if seq >= seqs[0]], webhook.id
    # A webhook made while nothing more was appended has no delivery; one append more reaches all.
    message_create(sender=owner, content="after")
    last = max(Event.objects.filter(recipient=owner).values_list("seq", flat=True))
    assert Delivery.objects.filter(event_seq=last).count() == 4
