"""The append-only audit log (CONTRACT.md, "Audit log"): who did what to whose authority.

Every app records through `audit.record(...)`, inside the transaction of the action it records,
so an entry exists exactly when the action committed. This app imports no other app (it sits just
above `common`): it stores the actor's id, not a foreign key, so an erased account's entries stay.
"""

from __future__ import annotations

import uuid
from typing import Any


def record(
    actor: Any,
    action: str,
    *,
    ip: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry in the caller's transaction. `actor`: a user, a user id, or None (unknown,
    e.g. a failed sign-in with an email no account has). `action`: `<area>.<verb>` (see the README)."""
    from audit.services import entry_append  # the app's models load after the app registry

    actor_id = actor if isinstance(actor, uuid.UUID | None) else getattr(actor, "pk", None)
    entry_append(actor_id=actor_id, action=action, ip=ip, target=target or "", detail=detail or {})


def record_refused(
    actor: Any,
    action: str,
    *,
    ip: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """An attempt that was refused (a failed sign-in): nothing was written, so there is no
    transaction to join. With `AUDIT_WRITE_BEHIND` (the default) the entry is written within about
    a second by this process's writer thread, in batches: a flood of bad passwords never takes
    SQLite's write lock on the request's path (`audit.services.WriteBehind`)."""
    from django.conf import settings

    if not settings.CORTEX["AUDIT_WRITE_BEHIND"]:
        record(actor, action, ip=ip, target=target, detail=detail)
        return
    from audit.services import write_behind

    actor_id = actor if isinstance(actor, uuid.UUID | None) else getattr(actor, "pk", None)
    write_behind().add(actor_id=actor_id, action=action, ip=ip, target=target or "", detail=detail or {})


def strip(actor_id: uuid.UUID) -> None:
    """An erased account: its entries keep nothing personal but its id (in the caller's transaction)."""
    from audit.services import entries_strip

    entries_strip(actor_id=actor_id)
