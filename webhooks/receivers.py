"""The deliveries of an event are written in the transaction that appends it (the outbox pattern)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from streaming.signals import events_appended
from webhooks import services


@receiver(events_appended, dispatch_uid="webhooks.deliveries_create")
def create_deliveries(sender: Any, entries: list, **kwargs: Any) -> None:
    services.deliveries_create(entries=entries)
