"""Hooks from `workspaces`: they run inside the writing transaction, so each outbox row commits
(or rolls back) with the message or deletion it describes; delivery starts after the commit."""

from __future__ import annotations

import uuid
from typing import Any

from django.dispatch import receiver

from accounts.signals import user_deleting
from mcp_services.outbox import delivery, services
from workspaces.models import Message
from workspaces.services import CreatedInput
from workspaces.signals import conversations_deleting, messages_created


@receiver(messages_created, dispatch_uid="mcp_services.memory_store")
def enqueue_memory_stores(sender: Any, created: list[CreatedInput], **kwargs: Any) -> None:
    # Memory is per user: an input belongs to its sender, whoever else receives the event.
    services.outbox_stores_enqueue(
        stores=[(entry.message.sender_id, entry.message.id, dict(entry.data)) for entry in created],
        traces=[entry.trace for entry in created],
    )
    delivery.deliver_after_commit()


@receiver(user_deleting, dispatch_uid="mcp_services.memory_purge_user")
def enqueue_memory_purge(sender: Any, user: Any, **kwargs: Any) -> None:
    # Everything the user stored (also their inputs to other people's conversations).
    services.outbox_user_purge_enqueue(user_id=user.id)
    delivery.deliver_after_commit()


@receiver(conversations_deleting, dispatch_uid="mcp_services.memory_delete")
def enqueue_memory_deletes(sender: Any, conversation_ids: list[uuid.UUID], **kwargs: Any) -> None:
    # Every participant's items of these conversations, sent before the messages are gone.
    pairs = list(
        Message.objects.filter(conversation_id__in=conversation_ids)
        .values_list("sender_id", "conversation_id")
        .distinct()
        .order_by()
    )
    if services.outbox_conversation_deletes_enqueue(pairs=pairs):
        delivery.deliver_after_commit()
