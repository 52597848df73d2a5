"""Reads of the core's memory outbox."""

from __future__ import annotations

from mcp_services.models import OutboxEntry


def outbox_pending_count() -> int:
    return OutboxEntry.objects.pending().count()
