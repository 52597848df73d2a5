"""`manage.py housekeeping` (run by run_cortex on a schedule) prunes everything that would grow."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.services import token_pair_issue
from mcp_services.models import OutboxEntry
from streaming.models import Event, StreamTicket
from streaming.services import ticket_issue
from workspaces.models import IdempotencyRecord
from workspaces.services import message_create


@pytest.mark.django_db
def test_housekeeping_prunes_old_events_tickets_records_delivered_outbox_and_expired_jwts(alice, bob):
    long_ago = timezone.now() - timedelta(days=30)
    with time_machine.travel(long_ago, tick=False):
        message_create(sender=alice, content="old", idempotency_key="k-old")
        ticket_issue(user=alice)
        token_pair_issue(user=alice)  # its refresh token expired long since
        old_refresh = OutstandingToken.objects.get()
        BlacklistedToken.objects.create(token=old_refresh)
        message_create(sender=alice, content="refused")
    entries = OutboxEntry.objects.all()
    entries.update(delivered_at=long_ago)
    entries.filter(arguments__input_data__content="refused").update(
        delivered_at=None, failed_at=long_ago, last_error="invalid_input: refused"
    )

    message_create(sender=bob, content="new", idempotency_key="k-new")  # pending, recent
    ticket_issue(user=bob)
    token_pair_issue(user=bob)

    out = io.StringIO()
    call_command("housekeeping", stdout=out)

    assert [e.body.payload["data"]["content"] for e in Event.objects.all()] == ["new"]
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k-new"]
    assert list(StreamTicket.objects.values_list("user", flat=True)) == [bob.id]
    assert list(OutstandingToken.objects.values_list("user", flat=True)) == [bob.id]
    assert not BlacklistedToken.objects.exists()
    # Delivered rows past retention go; a failed one stays for an operator, a pending one is owed.
    remaining = sorted(OutboxEntry.objects.values_list("arguments__input_data__content", flat=True))
    assert remaining == ["new", "refused"]
    assert "1 expired JWTs" in out.getvalue() and "1 delivered outbox entries" in out.getvalue()
