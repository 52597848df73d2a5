"""Writes of the audit log: append (in the caller's transaction), strip an erased account, prune."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEntry


def _ip_or_none(ip: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:  # "unknown" (no peer address), or a test client's name
        return None


def entry_append(
    *, actor_id: uuid.UUID | None, action: str, ip: str | None, target: str, detail: dict[str, Any]
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor_id=actor_id, action=action, ip=_ip_or_none(ip), target=target[:200], detail=detail
    )


def entries_strip(*, actor_id: uuid.UUID) -> int:
    """An erased account: its entries stay (what happened, when) with nothing personal but its id."""
    return AuditEntry.objects.filter(actor_id=actor_id).update(ip=None, target="", detail={})


def entries_prune() -> int:
    """Entries past AUDIT_RETENTION_DAYS (housekeeping)."""
    cutoff = timezone.now() - timedelta(days=settings.CORTEX["AUDIT_RETENTION_DAYS"])
    # A bulk DELETE (no per-row `delete()`, which refuses): the one path that removes entries.
    return AuditEntry.objects.filter(at__lt=cutoff)._raw_delete(AuditEntry.objects.db)
