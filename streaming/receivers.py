"""Signal receivers: the event log is written in the transaction that accepts the input."""

from __future__ import annotations

from typing import Any

from streaming import services


def on_messages_created(sender: Any, *, created: list, **kwargs: Any) -> None:
    services.events_record_for_messages(created=created)


def on_user_saved(sender: Any, *, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        services.cursor_ensure(user_id=instance.id)
