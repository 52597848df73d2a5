"""Connections end with what they were for: deleting the expert or the account, or leaving the
expert's workspace (no longer taking part in any of its conversations), revokes the tokens at the
server and removes them, once the deletion is committed."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, pre_delete
from django.dispatch import receiver

from connections.models import Connection
from workspaces.models import Conversation, Expert
from workspaces.selectors import member_workspace_ids


def _revoke_after_commit(connections: list[Connection]) -> None:
    """The tokens are decrypted now (the rows go with the deletion), revoked after the commit."""
    if not connections:
        return
    # Imported here, not at start-up: every Django process loads these receivers (apps.ready), and
    # the services' imports (the OAuth client, DRF, metrics) are for the few that revoke.
    from connections import services

    transaction.on_commit(lambda: services.revoke_and_delete(connections))


@receiver(pre_delete, sender=Expert, dispatch_uid="connections.expert_deleted")
def expert_deleted(sender: Any, instance: Expert, **kwargs: Any) -> None:
    _revoke_after_commit(list(Connection.objects.select_related("expert", "client").filter(expert=instance)))


@receiver(pre_delete, sender=get_user_model(), dispatch_uid="connections.user_deleted")
def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _revoke_after_commit(list(Connection.objects.select_related("expert", "client").filter(user_id=instance.pk)))


@receiver(m2m_changed, sender=Conversation.participants.through, dispatch_uid="connections.participants_left")
def participants_left(sender: Any, instance: Any, action: str, pk_set: set | None, **kwargs: Any) -> None:
    if action != "post_remove" or not pk_set or not isinstance(instance, Conversation):
        return
    for user_id in pk_set:
        still = set(member_workspace_ids(user_id=user_id))
        if instance.workspace_id in {row["conversation__workspace_id"] for row in still}:
            continue
        _revoke_after_commit(
            list(
                Connection.objects.select_related("expert", "client").filter(
                    user_id=user_id, expert__workspace_id=instance.workspace_id
                )
            )
        )
