"""Signal receivers: the event log is written in the transaction that accepts the input."""

from __future__ import annotations

from typing import Any

from streaming import services


def on_messages_created(sender: Any, *, created: list, **kwargs: Any) -> None:
    services.events_record_for_messages(created=created)


def on_user_saved(sender: Any, *, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        services.cursor_ensure(user_id=instance.id)


def on_user_saved_revoke(
    sender: Any, *, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if raw:
        return
    if not instance.is_active:
        services.streams_revoke(user_id=instance.id)
    elif instance.sessions_ended_at is not None and (update_fields is None or "sessions_ended_at" in update_fields):
        # A logout or password change: the streams opened before it end (a full save of a user
        # sends this again, which ends nothing new).
        services.streams_revoke(user_id=instance.id, before=instance.sessions_ended_at)


def on_user_deleted(sender: Any, *, instance: Any, **kwargs: Any) -> None:
    services.streams_revoke(user_id=instance.id)


def on_participants_changed(
    sender: Any, *, instance: Any, action: str, reverse: bool, pk_set: set | None, **kwargs: Any
) -> None:
    """Whoever leaves a conversation (API, admin, shell: every path changes the m2m) loses its
    events. `reverse`: the change came from the user's side (`user.conversations.remove(...)`)."""
    if action == "pre_clear":
        # `clear()` names no pks: remember who is there before they are gone.
        ids = (
            list(instance.conversations.values_list("id", flat=True))
            if reverse
            else list(instance.participants.values_list("id", flat=True))
        )
        instance._participants_cleared = ids
        return
    if action == "post_clear":
        pk_set = set(getattr(instance, "_participants_cleared", []))
    elif action != "post_remove":
        return
    if reverse:
        for conversation_id in pk_set or ():
            services.events_forget_conversation(conversation_id=conversation_id, user_ids=[instance.id])
    else:
        services.events_forget_conversation(conversation_id=instance.id, user_ids=pk_set or ())
