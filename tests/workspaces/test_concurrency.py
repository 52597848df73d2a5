"""Races that only real transactions show: run with committed data, several threads at once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests.factories import UserFactory
from workspaces.models import IdempotencyRecord, Message
from workspaces.services import message_create

pytestmark = pytest.mark.django_db(transaction=True)


def run_concurrently(worker, count: int) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = worker()
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_retries_with_one_idempotency_key_create_one_message():
    user = UserFactory()
    results = run_concurrently(lambda: message_create(sender=user, content="same", idempotency_key="race-key"), count=6)
    assert not [r for r in results if isinstance(r, Exception)], results
    responses = [response for response, _created in results]
    assert len({r["data"]["id"] for r in responses}) == 1
    assert sum(1 for _response, created in results if created) == 1
    assert Message.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
