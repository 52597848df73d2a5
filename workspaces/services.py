"""Writes: workspaces, conversations and messages (accepted input).

Every write is one transaction. The `workspaces.signals` hooks run inside it, so the event log and
the memory outbox commit together with the rows they describe.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NotRequired, TypedDict, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from accounts.models import User
from common.errors import CortexError, ErrorCode
from workspaces.models import Conversation, Expert, IdempotencyRecord, Message, Workspace
from workspaces.selectors import conversation_recipient_ids, conversation_settings, iso
from workspaces.signals import conversations_busy, conversations_deleting, messages_created


class InputData(TypedDict):
    id: str
    content: str
    conversation_id: str | None
    metadata: dict[str, Any]
    timestamp: str


class InputResponse(TypedDict):
    status: str
    data: InputData
    turn_id: NotRequired[str]  # the assistant turn this input started (see `input_starts_turn`)


def _validated(instance: Workspace | Conversation | Message | Expert, *, exclude: list[str] | None = None) -> None:
    instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


@transaction.atomic
def workspace_create(*, owner: User, name: str, description: str = "", metadata: dict | None = None) -> Workspace:
    workspace = Workspace(owner=owner, name=name, description=description, metadata=metadata or {})
    _validated(workspace, exclude=["owner"])
    workspace.save(force_insert=True)
    return workspace


@transaction.atomic
def workspace_update(*, workspace: Workspace, **changes: Any) -> Workspace:
    fields = [name for name in ("name", "description", "metadata", "monthly_tokens") if name in changes]
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
        conversations_deleting.send(sender=Conversation, conversation_ids=conversation_ids, owner_id=workspace.owner_id)
    workspace.delete()


def workspaces_delete_for_owner(*, owner: User) -> None:
    """Every workspace of a user being deleted (`accounts.signals.user_deleting`), as `workspace_delete` does."""
    conversation_ids = list(Conversation.objects.filter(workspace__owner=owner).values_list("id", flat=True))
    if conversation_ids:
        conversations_deleting.send(sender=Conversation, conversation_ids=conversation_ids, owner_id=owner.id)
    Workspace.objects.filter(owner=owner).delete()


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
    responder: str = Conversation.Responder.NONE,
    context_scope: str = Conversation.ContextScope.CONVERSATION,
    turn_policy: str = Conversation.TurnPolicy.QUEUE,
) -> Conversation:
    """Only the workspace owner creates conversations (the caller has checked); they always take part."""
    conversation = Conversation(
        workspace=workspace,
        topic=topic,
        metadata=metadata or {},
        responder=responder,
        context_scope=context_scope,
        turn_policy=turn_policy,
    )
    _validated(conversation, exclude=["workspace"])
    members = _participants_resolve(participant_ids or [], creator)
    _personal_checked(conversation, len(members))
    conversation.save(force_insert=True)
    conversation.participants.set(members)  # type: ignore[arg-type]  # primary keys (UUIDs) are fine
    return conversation


@transaction.atomic
def conversation_update(
    *, conversation: Conversation, participant_ids: list[uuid.UUID] | None = None, **changes: Any
) -> Conversation:
    fields = [name for name in ("topic", "metadata", "responder", "context_scope", "turn_policy") if name in changes]
    for name in fields:
        setattr(conversation, name, changes[name])
    _validated(conversation, exclude=["workspace"])
    members = None
    if participant_ids is not None:
        members = _participants_resolve(participant_ids, conversation.workspace.owner)
        if len(members) > 1 and "context_scope" not in changes:
            # Someone joins: what the assistant reads is again what every participant may read.
            conversation.context_scope = Conversation.ContextScope.CONVERSATION
            fields.append("context_scope")
    _personal_checked(conversation, len(members) if members is not None else conversation.participants.count())
    if fields:
        conversation.save(update_fields=[*fields, "updated_at"])
    if members is not None:
        conversation.participants.set(members)  # type: ignore[arg-type]
    return conversation


def _personal_checked(conversation: Conversation, participants: int) -> None:
    """`personal` context reaches the requester's memory from everywhere, and a turn's answer goes
    to every participant: so only a conversation of one may have it."""
    if conversation.context_scope == Conversation.ContextScope.PERSONAL and participants > 1:
        raise CortexError(
            ErrorCode.CONFLICT,
            'context_scope "personal" is only for a conversation with a single participant.',
            fields={"context_scope": ["Only with a single participant."]},
        )


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    conversations_deleting.send(
        sender=Conversation, conversation_ids=[conversation.id], owner_id=conversation.workspace.owner_id
    )
    conversation.delete()


def input_request_hash(*, content: str, conversation_id: uuid.UUID | None, metadata: dict) -> str:
    canonical = json.dumps(
        {
            "content": content,
            "conversation_id": str(conversation_id) if conversation_id else None,
            "metadata": metadata,
        },
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
    return _replayed(record, request_hash)


def _replayed(record: IdempotencyRecord, request_hash: str) -> InputResponse:
    if record.request_hash != request_hash:
        raise CortexError(
            ErrorCode.IDEMPOTENCY_CONFLICT, "This Idempotency-Key was used with a different request body."
        )
    return record.response


@dataclass(frozen=True)
class InputRequest:
    """One input as a client sent it, already parsed (the access check happens in the write)."""

    sender: User
    content: str
    conversation_id: uuid.UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    trace: str = ""  # the request's `traceparent` (tracing on), carried by the outbox row and the turn


@dataclass(frozen=True)
class CreatedInput:
    """What the `messages_created` hook receives for each message of a batch."""

    message: Message
    recipient_ids: list[uuid.UUID]
    data: InputData
    # Set when the input starts an assistant turn: its id, already in the response (the `turns`
    # app's hook inserts the turn row with it, in this transaction).
    turn_id: uuid.UUID | None = None
    responder: str = Conversation.Responder.NONE
    direct_call: DirectCall | None = None  # the content parsed as `/<expert> <tool> <json>`, once
    turn_policy: str = Conversation.TurnPolicy.QUEUE
    trace: str = ""  # InputRequest.trace


# `/<expert> <tool> <json object>`: a direct call of one expert tool, without a model. Only a
# JSON object (`{...}`) after the tool name makes an input a call, so "/me waves" stays a message;
# a malformed object still starts the turn, which then fails with the parse error (see the schema).
DIRECT_CALL = re.compile(
    r"\A/(?P<expert>[a-z0-9][a-z0-9_-]{0,63})[ \t]+(?P<tool>[A-Za-z0-9_.-]{1,128})[ \t]+(?P<arguments>\{.*)\Z", re.S
)


@dataclass(frozen=True)
class DirectCall:
    """Parsed once, when the input is accepted; carried on the input (`CreatedInput`) and stored
    on its turn (`Turn.direct_call`), which runs it."""

    expert: str
    tool: str
    arguments: str  # the JSON text as sent: parsed (and refused) by the turn

    def as_json(self) -> dict[str, str]:
        return {"expert": self.expert, "tool": self.tool, "arguments": self.arguments}


def direct_call_parse(content: str) -> DirectCall | None:
    match = DIRECT_CALL.match(content.strip())
    if match is None:
        return None
    return DirectCall(expert=match["expert"], tool=match["tool"], arguments=match["arguments"])


def input_starts_turn(*, call: DirectCall | None, conversation_id: uuid.UUID | None, responder: str | None) -> bool:
    """An input to a conversation whose responder is not `none`, or a direct call, starts a turn."""
    if conversation_id is None:
        return False
    return (responder not in (None, Conversation.Responder.NONE)) or call is not None


# The outcome of one input: its response and whether it was created now (False: a replay), or the
# error it gets (Http404 for a conversation the sender cannot post to, the idempotency CortexError, ValidationError).
InputOutcome = tuple[InputResponse, bool] | Exception


def messages_create(*, requests: list[InputRequest]) -> list[InputOutcome]:
    """Accept a batch of inputs in one transaction (the group commit of `workspaces.writer`).

    Each input is checked on its own (conversation access, idempotency, validation) and gets its
    own outcome; the accepted ones, their idempotency records and the hooks' rows (events, memory
    outbox) commit together, and nothing leaves the process before that commit.
    """
    try:
        with transaction.atomic():
            return _messages_write(requests)
    except IntegrityError:
        # Another process committed one of these Idempotency-Keys first (the unique constraint
        # caught it): write one at a time, so each input answers as that key's retry or succeeds.
        if len(requests) > 1:
            return [messages_create(requests=[request])[0] for request in requests]
        request = requests[0]
        if not request.idempotency_key:
            raise
        try:
            replay = _idempotent_replay(
                sender=request.sender, key=request.idempotency_key, request_hash=_request_hash(request)
            )
        except CortexError as exc:  # the idempotency conflict
            return [exc]
        if replay is None:
            raise
        return [(replay, False)]


def _request_hash(request: InputRequest) -> str:
    return input_request_hash(
        content=request.content, conversation_id=request.conversation_id, metadata=request.metadata
    )


def _messages_write(requests: list[InputRequest]) -> list[InputOutcome]:
    outcomes: list[InputOutcome | None] = [None] * len(requests)
    conversation_ids = {request.conversation_id for request in requests if request.conversation_id}
    members = conversation_recipient_ids(conversation_ids=conversation_ids)
    calls = [direct_call_parse(request.content) if request.conversation_id else None for request in requests]
    conversations = conversation_settings(conversation_ids=conversation_ids)
    opening = {
        request.conversation_id
        for request, call in zip(requests, calls, strict=True)
        if request.conversation_id in conversations
        and input_starts_turn(
            call=call,
            conversation_id=request.conversation_id,
            responder=conversations[request.conversation_id].responder,
        )
    }
    busy: set[uuid.UUID] = set()
    if opening:  # inputs that open turns: the conversations' locks, then their open turns
        conversations.update(conversation_settings(conversation_ids=opening, lock=True))
        policed = {cid for cid in opening if conversations[cid].turn_policy != Conversation.TurnPolicy.QUEUE}
        for _receiver, found in conversations_busy.send(sender=Conversation, conversation_ids=policed):
            open_in = cast(set[uuid.UUID], found)
            busy |= {cid for cid in open_in if conversations[cid].turn_policy == Conversation.TurnPolicy.REJECT}
    records = _idempotency_records(requests)
    window_start = timezone.now() - timedelta(hours=settings.CORTEX["IDEMPOTENCY_HOURS"])
    first_of_key: dict[tuple[uuid.UUID, str], IdempotencyRecord] = {}
    repeats: list[tuple[int, tuple[uuid.UUID, str]]] = []  # a key used again within this batch
    created: list[CreatedInput] = []
    expired: list[int] = []
    for index, request in enumerate(requests):
        sender_id = request.sender.id
        recipients = members.get(request.conversation_id) if request.conversation_id else [sender_id]
        if not recipients or sender_id not in recipients:
            outcomes[index] = Http404("Conversation not found.")
            continue
        request_hash = _request_hash(request)
        key = (sender_id, request.idempotency_key) if request.idempotency_key else None
        if key is not None:
            record = records.get(key)
            if record is not None and record.created_at < window_start:
                expired.append(record.pk)
                record = None
            if record is not None:
                try:
                    outcomes[index] = (_replayed(record, request_hash), False)
                except CortexError as exc:  # the idempotency conflict
                    outcomes[index] = exc
                continue
            if key in first_of_key:
                repeats.append((index, key))  # answered below, as a retry of the first one
                continue
        message = Message(
            sender=request.sender,
            conversation_id=request.conversation_id,
            content=request.content,
            metadata=request.metadata,
        )
        try:
            _validated(message, exclude=["sender", "conversation"])
        except ValidationError as exc:
            outcomes[index] = exc
            continue
        data = message_data(message)
        response: InputResponse = {"status": "received", "data": data}
        conversation = conversations.get(request.conversation_id) if request.conversation_id else None
        responder = conversation.responder if conversation else None
        turn_id = None
        if input_starts_turn(call=calls[index], conversation_id=request.conversation_id, responder=responder):
            assert conversation is not None  # a turn is only in a conversation
            if conversation.id in busy:
                outcomes[index] = CortexError(
                    ErrorCode.TURN_IN_PROGRESS,
                    "This conversation has a turn in progress (its turn_policy is reject): nothing was stored.",
                )
                continue
            if conversation.turn_policy == Conversation.TurnPolicy.REJECT:
                busy.add(conversation.id)  # the next input of this batch finds this turn open
            # In the response (and so in the idempotency record): a retry answers the same turn.
            turn_id = uuid.uuid4()
            response["turn_id"] = str(turn_id)
        outcomes[index] = (response, True)
        created.append(
            CreatedInput(
                message=message,
                recipient_ids=recipients,
                data=data,
                turn_id=turn_id,
                responder=responder or Conversation.Responder.NONE,
                direct_call=calls[index],
                turn_policy=conversation.turn_policy if conversation else Conversation.TurnPolicy.QUEUE,
                trace=request.trace,
            )
        )
        if key is not None:
            first_of_key[key] = IdempotencyRecord(
                user=request.sender, key=key[1], request_hash=request_hash, response=response, message=message
            )
    for index, key in repeats:
        try:
            outcomes[index] = (_replayed(first_of_key[key], _request_hash(requests[index])), False)
        except CortexError as exc:  # the idempotency conflict
            outcomes[index] = exc
    if expired:
        IdempotencyRecord.objects.filter(pk__in=expired).delete()
    if created:
        Message.objects.bulk_create([entry.message for entry in created])
        if first_of_key:
            IdempotencyRecord.objects.bulk_create(first_of_key.values())
        messages_created.send(sender=Message, created=created)
    return outcomes  # type: ignore[return-value]


def _idempotency_records(requests: list[InputRequest]) -> dict[tuple[uuid.UUID, str], IdempotencyRecord]:
    keyed = {(request.sender.id, request.idempotency_key) for request in requests if request.idempotency_key}
    if not keyed:
        return {}
    query = Q()
    for user_id, key in keyed:
        query |= Q(user_id=user_id, key=key)
    return {(record.user_id, record.key): record for record in IdempotencyRecord.objects.filter(query)}


def message_create(
    *,
    sender: User,
    content: str,
    conversation: Conversation | None = None,
    metadata: dict | None = None,
    idempotency_key: str | None = None,
) -> tuple[InputResponse, bool]:
    """Accept one input (a batch of one). Returns the response and whether it was created now
    (False: a replay); raises the input's error."""
    request = InputRequest(
        sender=sender,
        content=content,
        conversation_id=conversation.id if conversation else None,
        metadata=metadata or {},
        idempotency_key=idempotency_key,
    )
    outcome = messages_create(requests=[request])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


# --- experts -------------------------------------------------------------------------------------

MAX_ALLOWED_TOOLS = 200


@dataclass(frozen=True)
class ExpertDiscovery:
    """The outcome of a `tools/list` (made by the caller, outside any transaction)."""

    status: str
    tools: list[dict[str, Any]]
    last_error: str = ""
    discovered_at: Any = None
    tools_expire_at: Any = None


def _allowed_tools_checked(allowed_tools: list[str] | None) -> list[str] | None:
    if allowed_tools is None:
        return None
    if not isinstance(allowed_tools, list) or len(allowed_tools) > MAX_ALLOWED_TOOLS:
        raise ValidationError({"tools": [f"A list of at most {MAX_ALLOWED_TOOLS} tool names."]})
    if any(not isinstance(name, str) or not 0 < len(name) <= 128 for name in allowed_tools):
        raise ValidationError({"tools": ["Tool names are strings of 1 to 128 characters."]})
    return sorted(set(allowed_tools))


def _name_taken(*, name: str) -> CortexError:
    return CortexError(
        ErrorCode.CONFLICT, f"This workspace already has an expert named {name!r}.", fields={"name": ["Already taken."]}
    )


@transaction.atomic
def expert_create(
    *,
    workspace: Workspace,
    name: str,
    url: str,
    auth: str = Expert.Auth.CORE_TOKEN,
    allowed_tools: list[str] | None = None,
    tool_policy: dict[str, str] | None = None,
    discovery: ExpertDiscovery,
    oauth: dict[str, Any] | None = None,
) -> Expert:
    """Register an expert with what its discovery found (an unreachable one is kept as such).

    The URL's host has been checked against EXPERT_ALLOWED_HOSTS by the caller, which also
    checks it again before every call.
    """
    expert = Expert(
        workspace=workspace,
        name=name,
        url=url,
        auth=auth,
        allowed_tools=_allowed_tools_checked(allowed_tools),
        tool_policy=dict(tool_policy or {}),
        status=discovery.status,
        tools=discovery.tools,
        last_error=discovery.last_error[:2000],
        discovered_at=discovery.discovered_at,
        tools_expire_at=discovery.tools_expire_at,
        oauth=oauth,
    )
    _validated(expert, exclude=["workspace"])
    if Expert.objects.filter(workspace=workspace, name=name).exists():
        raise _name_taken(name=name)
    try:
        with transaction.atomic():  # a concurrent registration of the same name: the constraint decides
            expert.save(force_insert=True)
    except IntegrityError:
        raise _name_taken(name=name) from None
    return expert


@transaction.atomic
def expert_update(*, expert: Expert, discovery: ExpertDiscovery | None = None, **changes: Any) -> Expert:
    """Change name, url, auth, the allowlist (`allowed_tools`) or `tool_policy` (replaced whole);
    with `discovery`, store it too."""
    fields: list[str] = [
        name for name in ("name", "url", "auth", "allowed_tools", "tool_policy", "oauth") if name in changes
    ]
    if "allowed_tools" in changes:
        changes["allowed_tools"] = _allowed_tools_checked(changes["allowed_tools"])
    for name in fields:
        setattr(expert, name, changes[name])
    if discovery is not None:
        _discovery_apply(expert, discovery)
        fields += ["status", "tools", "last_error", "discovered_at", "tools_expire_at"]
    _validated(expert, exclude=["workspace"])
    if (
        "name" in fields
        and Expert.objects.filter(workspace_id=expert.workspace_id, name=expert.name).exclude(id=expert.id).exists()
    ):
        raise _name_taken(name=expert.name)
    if fields:
        try:
            with transaction.atomic():
                expert.save(update_fields=[*fields, "updated_at"])
        except IntegrityError:
            raise _name_taken(name=expert.name) from None
    return expert


def _discovery_apply(expert: Expert, discovery: ExpertDiscovery) -> None:
    expert.status = discovery.status
    if discovery.status == Expert.Status.OK:
        expert.tools = discovery.tools
        expert.tools_expire_at = discovery.tools_expire_at
    # An unreachable expert keeps the tools it had (a model may still see them; calls fail and say
    # why). It is tried again after the shortest cache time, not on every use: a host that drops
    # packets would otherwise cost each turn the whole discovery timeout.
    else:
        expert.tools_expire_at = (discovery.discovered_at or timezone.now()) + timedelta(
            seconds=settings.EXPERT_TOOLS_MIN_TTL_SECONDS
        )
    expert.last_error = discovery.last_error[:2000]
    expert.discovered_at = discovery.discovered_at


@transaction.atomic
def expert_discovery_save(*, expert: Expert, discovery: ExpertDiscovery) -> Expert:
    _discovery_apply(expert, discovery)
    expert.save(update_fields=["status", "tools", "last_error", "discovered_at", "tools_expire_at", "updated_at"])
    return expert


def expert_tools_expire(*, expert_id: uuid.UUID) -> None:
    """The expert said its tool list changed (`notifications/tools/list_changed`): re-list on next use."""
    Expert.objects.filter(id=expert_id).update(tools_expire_at=timezone.now())


@transaction.atomic
def expert_delete(*, expert: Expert) -> None:
    expert.delete()
