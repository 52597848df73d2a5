"""Writes of the audit log: append (in the caller's transaction), strip an erased account, prune."""

from __future__ import annotations

import atexit
import ipaddress
import logging
import threading
import time
import uuid
from collections import deque
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
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


logger = logging.getLogger(__name__)

WRITE_BEHIND_MAX = 10_000  # entries held at most; past it the oldest are dropped (and counted in the log)
WRITE_BEHIND_SECONDS = 1.0  # how long entries gather before one batch is written


class WriteBehind:
    """Entries of refused attempts, written by one daemon thread per process in batches (one
    transaction each), about a second after they came. Bounded: a flood drops the oldest and says
    how many in the log. `flush()` writes what is held now (at exit, and for tests)."""

    def __init__(self) -> None:
        self._held: deque[AuditEntry] = deque(maxlen=WRITE_BEHIND_MAX)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def add(self, *, actor_id: uuid.UUID | None, action: str, ip: str | None, target: str, detail: dict) -> None:
        entry = AuditEntry(
            actor_id=actor_id, action=action, ip=_ip_or_none(ip), target=target[:200], detail=detail, at=timezone.now()
        )
        with self._lock:
            if len(self._held) == self._held.maxlen:
                self.dropped += 1
            self._held.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-write-behind", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
        self._wake.set()

    def flush(self) -> int:
        with self._lock:
            batch, dropped = list(self._held), self.dropped
            self._held.clear()
            self.dropped = 0
        if dropped:
            logger.warning(
                "audit: %d refused attempts were not recorded (more than %d held)", dropped, WRITE_BEHIND_MAX
            )
        if not batch:
            return 0
        try:
            AuditEntry.objects.bulk_create(batch)
        except Exception:
            with self._lock:  # kept for the next round (the oldest go first if it fills meanwhile)
                self._held.extendleft(reversed(batch))
            raise
        return len(batch)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(WRITE_BEHIND_SECONDS)  # gather: a flood becomes one write a second
            self._wake.clear()
            try:
                close_old_connections()
                self.flush()
            except Exception:
                logger.exception("audit: writing refused attempts failed; trying again")
                self._wake.set()
            finally:
                connection.close()


_write_behind = WriteBehind()


def write_behind() -> WriteBehind:
    return _write_behind
