"""Reads, and the one access check per resource.

`workspace_get_for_user` and `conversation_get_for_user` are the only ways views, consumers and
tools reach a workspace or conversation by id (turns through `turns.selectors.turn_get_for_user`,
which asks the latter), but for `POST /input`: its batch write checks every sender at once with
`conversation_recipient_ids`, the same rule. Both raise `Http404` alike for a missing object and
for one the caller may not see, so a response never reveals that another user's object exists.

Who takes part in a conversation is one rule, `_memberships` (an active participant): the access
check, the batch check of `POST /input` and the recipients of events (`conversation_recipient_ids`),
and the experts a turn may offer or call on someone's behalf (`experts_for_member`) all read it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404

from accounts.models import User
from workspaces.models import Conversation, Expert, Message, Workspace


def _as_uuid(value: object) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise Http404 from None


def workspace_get_for_user(*, user: User, workspace_id: object) -> Workspace:
    """Only the owner manages a workspace."""
    workspace = Workspace.objects.filter(id=_as_uuid(workspace_id), owner=user).first()
    if workspace is None:
        raise Http404
    return workspace


def _memberships(*, conversation_ids: set[uuid.UUID] | None = None, user_id: uuid.UUID | None = None) -> QuerySet:
    """The rule: who takes part in a conversation is its active participants. Rows of the
    participants table (`conversation_id`, `user_id`), narrowed to some conversations or a user."""
    rows = Conversation.participants.through.objects.filter(user__is_active=True)
    if conversation_ids is not None:
        rows = rows.filter(conversation_id__in=conversation_ids)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    return rows


def conversation_get_for_user(*, user: User, conversation_id: object, manage: bool = False) -> Conversation:
    """Participants may read and post; `manage=True` (config changes) needs the workspace owner."""
    if manage:
        access = Q(workspace__owner=user)
    else:
        access = Q(id__in=_memberships(user_id=user.id).values("conversation_id"))
    conversation = Conversation.objects.filter(access, id=_as_uuid(conversation_id)).select_related("workspace").first()
    if conversation is None:
        raise Http404
    return conversation


def expert_get_for_user(*, user: User, workspace_id: object, expert_id: object) -> Expert:
    """An expert of a workspace the user owns (the workspace's check; a foreign one is the same 404)."""
    workspace = workspace_get_for_user(user=user, workspace_id=workspace_id)
    expert = Expert.objects.filter(workspace=workspace, id=_as_uuid(expert_id)).select_related("workspace").first()
    if expert is None:
        raise Http404
    return expert


def expert_list(*, workspace: Workspace) -> QuerySet[Expert]:
    return Expert.objects.filter(workspace=workspace).order_by("created_at", "id")


def experts_for_member(*, user_id: uuid.UUID, workspace_id: uuid.UUID) -> list[Expert]:
    """The experts of a workspace, for a user who takes part in one of its conversations (the
    conversation rule: an active participant; the owner is a participant of every conversation of
    their workspace); empty for anyone else, an inactive owner too. The core lists, offers and
    calls experts only on behalf of such a user."""
    member = _memberships(user_id=user_id).filter(conversation__workspace_id=workspace_id).exists()
    if not member:
        return []
    return list(Expert.objects.filter(workspace_id=workspace_id).order_by("created_at", "id"))


def member_workspace_ids(*, user_id: uuid.UUID) -> QuerySet:
    """The ids of the workspaces whose experts serve `user_id` (the rule of `experts_for_member`)."""
    return _memberships(user_id=user_id).values("conversation__workspace_id")


def workspace_list(*, user: User) -> QuerySet[Workspace]:
    return Workspace.objects.filter(owner=user)


def conversation_list(*, user: User, workspace_id: object | None = None) -> QuerySet[Conversation]:
    conversations = Conversation.objects.filter(participants=user)
    if workspace_id is not None:
        workspace_uuid = _as_uuid(workspace_id)
        visible = Workspace.objects.filter(
            Q(owner=user) | Q(conversations__participants=user), id=workspace_uuid
        ).exists()
        if not visible:
            raise Http404
        conversations = conversations.filter(workspace_id=workspace_uuid)
    return conversations.prefetch_related("participants").order_by("created_at", "id")


def conversation_recipient_ids(*, conversation_ids: set[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The active participants of each conversation (who may post there, and who receives it)."""
    if not conversation_ids:
        return {}
    # `_memberships`' rule written out (read at every turn write and claim: building the query with
    # the ORM cost more than running it).
    connection = transaction.get_connection()
    native = connection.features.has_native_uuid_field
    ids = [cid if native else cid.hex for cid in map(_uuid_of, conversation_ids)]
    through = Conversation.participants.through._meta
    quote = connection.ops.quote_name
    conversation, user = (quote(through.get_field(name).column) for name in ("conversation", "user"))  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.{conversation}, p.{user} FROM {quote(through.db_table)} p"
            f" INNER JOIN {quote(User._meta.db_table)} u ON u.id = p.{user}"
            f" WHERE p.{conversation} IN ({', '.join(['%s'] * len(ids))}) AND u.is_active",
            ids,
        )
        rows = cursor.fetchall()
    members: dict[uuid.UUID, list[uuid.UUID]] = {}
    for conversation_id, user_id in rows:
        members.setdefault(_uuid_of(conversation_id), []).append(_uuid_of(user_id))
    return members


def conversation_recipients_column(conversation_column: str) -> str:
    """`conversation_recipient_ids`' rule as a column of another read (the active participants' ids
    of the conversation in `conversation_column`: an array on PostgreSQL, a comma-separated text on
    SQLite; `conversation_recipients_of` reads either), so a read that needs its rows' recipients
    (the turn claim, a turn's write) does not make a second round trip for them."""
    connection = transaction.get_connection()
    through = Conversation.participants.through._meta
    quote = connection.ops.quote_name
    conversation, user = (quote(through.get_field(name).column) for name in ("conversation", "user"))  # type: ignore[union-attr]
    members = (
        f" FROM {quote(through.db_table)} p INNER JOIN {quote(User._meta.db_table)} pu ON pu.id = p.{user}"
        f" WHERE p.{conversation} = {conversation_column} AND pu.is_active"
    )
    if connection.vendor == "postgresql":
        return f"ARRAY(SELECT p.{user}{members})"
    return f"(SELECT group_concat(p.{user}){members})"


def conversation_recipients_of(value: Any) -> list[uuid.UUID]:
    """A `conversation_recipients_column` value as the list `conversation_recipient_ids` gives."""
    if not value:
        return []
    if isinstance(value, str):
        return [uuid.UUID(member) for member in value.split(",")]
    return [_uuid_of(member) for member in value]


def _uuid_of(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def conversation_settings(*, conversation_ids: set[uuid.UUID], lock: bool = False) -> dict[uuid.UUID, Conversation]:
    """Each conversation's turn settings (`responder`, `turn_policy`, `context_scope`). With `lock`, the
    rows are locked in id order (PostgreSQL): an input that opens a turn and a turn that ends take
    the conversation's lock first, so its queue and its head turn change one write at a time.
    `FOR NO KEY UPDATE`: lockers still exclude each other, but a row inserted meanwhile that refers to
    the conversation (an event, a message: its foreign key takes `FOR KEY SHARE`) is not blocked.
    With `FOR UPDATE`, a turn's write (its turn locked, then an event inserted) and a cancel (the
    conversation locked, then the turn) deadlocked on PostgreSQL."""
    if not conversation_ids:
        return {}
    # Written out (the turn claim reads this at every claim: building it with the ORM cost more
    # than running it).
    connection = transaction.get_connection()
    native = connection.features.has_native_uuid_field
    ids = [uuid.UUID(str(cid)) if native else uuid.UUID(str(cid)).hex for cid in conversation_ids]
    locked = " FOR NO KEY UPDATE" if lock and connection.features.has_select_for_no_key_update else ""
    rows = Conversation.objects.raw(
        "SELECT id, workspace_id, responder, turn_policy, context_scope"
        f" FROM {connection.ops.quote_name(Conversation._meta.db_table)}"
        f" WHERE id IN ({', '.join(['%s'] * len(ids))}) ORDER BY id{locked}",
        ids,
    )
    return {conversation.id: conversation for conversation in rows}


def message_list(*, conversation: Conversation, before: Message | None = None, limit: int = 50) -> list[Message]:
    """Newest first; `before` is the last message of the previous page (keyset pagination)."""
    messages = Message.objects.filter(conversation=conversation)
    if before is not None:
        messages = messages.filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.id)
        )
    return list(messages.order_by("-created_at", "-id")[:limit])


def message_get_in_conversation(*, conversation: Conversation, message_id: object) -> Message:
    message = Message.objects.filter(conversation=conversation, id=_as_uuid(message_id)).first()
    if message is None:
        raise Http404
    return message


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
