"""Writes: workspaces, conversations and messages (accepted input).

Every write is one transaction. The `workspaces.signals` hooks run inside it, so the event log and
the memory outbox commit together with the rows they describe.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from common.errors import CortexError, ErrorCode
from workspaces.models import Conversation, IdempotencyRecord, Message, Workspace
from workspaces.selectors import conversation_participant_ids, iso
from workspaces.signals import conversations_deleting, message_created


class InputData(TypedDict):
    id: str
    content: str
    conversation_id: str | None
    metadata: dict[str, Any]
    timestamp: str


class InputResponse(TypedDict):
    status: str
    data: InputData


def _validated(instance: Workspace | Conversation | Message, *, exclude: list[str] | None = None) -> None:
    instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


@transaction.atomic
def workspace_create(*, owner: User, name: str, description: str = "", metadata: dict | None = None) -> Workspace:
    workspace = Workspace(owner=owner, name=name, description=description, metadata=metadata or {})
    _validated(workspace, exclude=["owner"])
    workspace.save(force_insert=True)
    return workspace


@transaction.atomic
def workspace_update(*, workspace: Workspace, **changes: Any) -> Workspace:
    fields = [name for name in ("name", "description", "metadata") if name in changes]
    for name in fields:
        setattr(workspace, name, changes[name])
    _validated(workspace, exclude=["owner"])
    if fields:
        workspace.save(update_fields=[*fields, "updated_at"])
    return workspace


@transaction.atomic
def workspace_delete(*, workspace: Workspace) -> None:
    conversation_ids = list(workspace.conversations.values_list("id", flat=True))
    if conversation_ids:
        conversations_deleting.send(
            sender=Conversation, conversation_ids=conversation_ids, owner_id=workspace.owner_id
        )
    workspace.delete()


def _participants_resolve(participant_ids: list[uuid.UUID], creator: User) -> list[uuid.UUID]:
    wanted = set(participant_ids) - {creator.id}
    found = set(get_user_model().objects.filter(id__in=wanted, is_active=True).values_list("id", flat=True))
    unknown = sorted(str(pid) for pid in wanted - found)
    if unknown:
        raise ValidationError({"participant_ids": [f"Unknown user id: {pid}" for pid in unknown]})
    limit = settings.CORTEX["MAX_PARTICIPANTS"]
    if len(found) + 1 > limit:
        raise ValidationError({"participant_ids": [f"At most {limit} participants."]})
    return [creator.id, *sorted(found)]


@transaction.atomic
def conversation_create(
    *,
    workspace: Workspace,
    creator: User,
    topic: str,
    participant_ids: list[uuid.UUID] | None = None,
    metadata: dict | None = None,
) -> Conversation:
    """Only the workspace owner creates conversations (the caller has checked); they always take part."""
    conversation = Conversation(workspace=workspace, topic=topic, metadata=metadata or {})
    _validated(conversation, exclude=["workspace"])
    members = _participants_resolve(participant_ids or [], creator)
    conversation.save(force_insert=True)
    conversation.participants.set(members)  # type: ignore[arg-type]  # primary keys (UUIDs) are fine
    return conversation


@transaction.atomic
def conversation_update(
    *, conversation: Conversation, participant_ids: list[uuid.UUID] | None = None, **changes: Any
) -> Conversation:
    fields = [name for name in ("topic", "metadata") if name in changes]
    for name in fields:
        setattr(conversation, name, changes[name])
    _validated(conversation, exclude=["workspace"])
    if fields:
        conversation.save(update_fields=[*fields, "updated_at"])
    if participant_ids is not None:
        conversation.participants.set(_participants_resolve(participant_ids, conversation.workspace.owner))  # type: ignore[arg-type]
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    conversations_deleting.send(
        sender=Conversation, conversation_ids=[conversation.id], owner_id=conversation.workspace.owner_id
    )
    conversation.delete()


def input_request_hash(*, content: str, conversation_id: uuid.UUID | None, metadata: dict) -> str:
    canonical = json.dumps(
        {"content": content, "conversation_id": str(conversation_id) if conversation_id else None, "metadata": metadata},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def message_data(message: Message) -> InputData:
    return {
        "id": str(message.id),
        "content": message.content,
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "metadata": message.metadata,
        "timestamp": iso(message.created_at),
    }


def _idempotent_replay(*, sender: User, key: str, request_hash: str) -> InputResponse | None:
    window_start = timezone.now() - timedelta(hours=settings.CORTEX["IDEMPOTENCY_HOURS"])
    record = IdempotencyRecord.objects.filter(user=sender, key=key).first()
    if record is None:
        return None
    if record.created_at < window_start:
        record.delete()
        return None
    if record.request_hash != request_hash:
        raise CortexError(ErrorCode.IDEMPOTENCY_CONFLICT, "This Idempotency-Key was used with a different request body.")
    return record.response


def message_create(
    *,
    sender: User,
    content: str,
    conversation: Conversation | None = None,
    metadata: dict | None = None,
    idempotency_key: str | None = None,
) -> tuple[InputResponse, bool]:
    """Accept one input. Returns the response and whether it was created now (False: a replay).

    The message, its idempotency record and the hooks' rows (events, memory outbox) commit in one
    transaction; nothing leaves the process before that commit.
    """
    metadata = metadata or {}
    request_hash = input_request_hash(
        content=content, conversation_id=conversation.id if conversation else None, metadata=metadata
    )
    try:
        with transaction.atomic():
            if idempotency_key:
                replay = _idempotent_replay(sender=sender, key=idempotency_key, request_hash=request_hash)
                if replay is not None:
                    return replay, False
            message = Message(sender=sender, conversation=conversation, content=content, metadata=metadata)
            _validated(message, exclude=["sender", "conversation"])
            message.save(force_insert=True)
            data = message_data(message)
            response: InputResponse = {"status": "received", "data": data}
            if idempotency_key:
                IdempotencyRecord.objects.create(
                    user=sender, key=idempotency_key, request_hash=request_hash, response=response, message=message
                )
            recipients = conversation_participant_ids(conversation=conversation) if conversation else [sender.id]
            message_created.send(sender=Message, message=message, recipient_ids=recipients, data=data)
            return response, True
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key committed first: answer as its retry.
        replay = _idempotent_replay(sender=sender, key=idempotency_key, request_hash=request_hash)
        if replay is None:
            raise
        return replay, False
