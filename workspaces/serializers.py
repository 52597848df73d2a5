from __future__ import annotations

import uuid
from typing import Any

import msgspec
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.fields import validate_metadata
from common.web.parsers import unstorable
from workspaces.models import Conversation, Message


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of coercing them."""

    default_error_messages = {"invalid": "Not a valid string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.OBJECT)
class MetadataField(serializers.Field):
    """A JSON object, bounded by `validate_metadata`.

    Not a `DictField`: DRF builds every field of a serializer anew for each instance, and a
    `DictField` builds a child field too; on the input path that construction cost more than the
    validation itself. The value is already parsed JSON, so only its shape needs checking.
    """

    default_error_messages = {"invalid": "Expected a JSON object."}

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("validators", [validate_metadata])
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class WorkspaceInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    metadata = MetadataField(default=dict)


class WorkspacePatchSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True)
    metadata = MetadataField()
    monthly_tokens = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=10**15,
        help_text="The workspace's monthly token budget, counting every participant's turns here (0: none).",
    )


class ConfigRecordOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    metadata = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WorkspaceOutputSerializer(ConfigRecordOutputSerializer):
    name = serializers.CharField()
    description = serializers.CharField()
    owner_id = serializers.UUIDField()
    monthly_tokens = serializers.IntegerField(help_text="Monthly token budget of the workspace (0: none).")


def _participants_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.UUIDField(), max_length=settings.CORTEX["MAX_PARTICIPANTS"], **kwargs
    )


# The conversation's turn settings, each with what it means for a client (in the schema).
_SETTINGS: dict[str, tuple[list[str], str]] = {
    "responder": (
        Conversation.Responder.values,
        "Who answers inputs here: `none` (nobody, the default), `echo` (streams each input back: for"
        " development and tests) or `llm` (the configured OpenAI-compatible model, with the cognition"
        " context and the workspace's expert tools). With a responder other than `none`, each input starts"
        " an assistant turn (`turn_id` in the `POST /input` response).",
    ),
    "context_scope": (
        Conversation.ContextScope.values,
        "What an `llm` turn's model request may hold. `conversation` (the default): only what every participant"
        " may read: this conversation's messages and answers, and memory items that came from this conversation"
        " (from any participant). `personal`: also the requester's own memory from every workspace and"
        " conversation; only while the conversation has a single participant (else 409 `conflict`); adding a"
        " participant sets it back to `conversation`.",
    ),
    "turn_policy": (
        Conversation.TurnPolicy.values,
        "What an input that starts a turn does while another turn of this conversation is queued or running:"
        " `queue` (the default: turns run one after another, in input order), `reject` (409 `turn_in_progress`,"
        " nothing stored) or `interrupt` (the open turns end `assistant.cancelled` with `data.reason`"
        ' "interrupted", and the new one runs next).',
    ),
}


def _setting_field(name: str, **kwargs) -> serializers.ChoiceField:
    choices, help_text = _SETTINGS[name]
    return serializers.ChoiceField(choices=choices, help_text=help_text, **kwargs)


class ConversationInputSerializer(serializers.Serializer):
    workspace_id = serializers.UUIDField()
    topic = StrictCharField(max_length=200)
    participant_ids = _participants_field(required=False, default=list)
    metadata = MetadataField(default=dict)
    responder = _setting_field("responder", required=False, default=Conversation.Responder.NONE)
    context_scope = _setting_field("context_scope", required=False, default=Conversation.ContextScope.CONVERSATION)
    turn_policy = _setting_field("turn_policy", required=False, default=Conversation.TurnPolicy.QUEUE)


class ConversationPatchSerializer(serializers.Serializer):
    topic = StrictCharField(max_length=200, required=False)
    participant_ids = _participants_field(required=False)
    metadata = MetadataField()
    responder = _setting_field("responder", required=False)
    context_scope = _setting_field("context_scope", required=False)
    turn_policy = _setting_field("turn_policy", required=False)


class ConversationOutputSerializer(ConfigRecordOutputSerializer):
    workspace_id = serializers.UUIDField()
    topic = serializers.CharField()
    participant_ids = serializers.SerializerMethodField()
    responder = _setting_field("responder")
    context_scope = _setting_field("context_scope")
    turn_policy = _setting_field("turn_policy")

    def get_participant_ids(self, conversation) -> list[str]:
        return sorted(str(user.id) for user in conversation.participants.all())


class ConversationListQuerySerializer(serializers.Serializer):
    workspace_id = serializers.UUIDField(required=False)


class InputSerializer(serializers.Serializer):
    content = StrictCharField(trim_whitespace=False)
    conversation_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    metadata = MetadataField(default=dict)

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("content must not be empty.", code="blank")
        limit = settings.CORTEX["MAX_CONTENT_CHARS"]
        if len(value) > limit:
            raise serializers.ValidationError(f"content must be at most {limit} characters.", code="too_large")
        return value


class InputBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /input`'s body as the lean path reads it (`InputApi.lean`): decoded and type-checked in
    one pass. A field the serializer does not know is refused here (the parser's checks cover
    every field of a body, and an unknown one is not kept to be checked), so DRF's path takes it."""

    content: str
    conversation_id: uuid.UUID | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


_input_body = msgspec.json.Decoder(InputBody)


def input_body_lean(body: bytes) -> InputBody | None:
    """The body when `InputSerializer` (behind `BoundedJSONParser`) would accept it with the same
    values; None when unsure: a decode or type error, or any rule below not met. DRF's path then
    parses and validates it again and answers with its own errors, so only acceptance must match:
    - `content`: a string (no coercion, like `StrictCharField`), not blank once stripped, within
      `MAX_CONTENT_CHARS`, and storable (no NUL, no unpaired surrogate: the parser and DRF's
      `CharField` validators); msgspec refuses an escaped unpaired surrogate and invalid UTF-8;
    - `conversation_id`: a UUID (msgspec reads the canonical forms, each the value DRF's
      `UUIDField` reads) or null;
    - `metadata`: an object that `validate_metadata` accepts (its depth bound implies the
      parser's depth bound on the body), and storable.
    """
    try:
        data = _input_body.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    content = data.content
    if not content.strip() or len(content) > settings.CORTEX["MAX_CONTENT_CHARS"] or unstorable(content):
        return None
    if data.metadata:
        try:
            validate_metadata(data.metadata)  # first: its depth bound keeps `unstorable`'s recursion shallow
        except DjangoValidationError:
            return None
        if unstorable(data.metadata):
            return None
    return data


class InputDataSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    content = serializers.CharField()
    conversation_id = serializers.UUIDField(allow_null=True)
    metadata = serializers.DictField()
    timestamp = serializers.DateTimeField()


class InputResponseSerializer(serializers.Serializer):
    status = serializers.CharField()
    data = InputDataSerializer()  # type: ignore[assignment]  # the API's field name shadows Serializer.data
    turn_id = serializers.UUIDField(
        required=False,
        help_text=(
            "Present when the input started an assistant turn: in a conversation whose `responder` is not"
            " `none`, or for a direct call `/<expert> <tool> <json object>` in any conversation. Its events"
            " (`assistant.*`, `tool.*`, each with `data.turn_id`) follow on the streams of every participant;"
            " `POST /turns/{turn_id}/cancel` stops it. A retry with the same Idempotency-Key answers the same"
            " `turn_id` and starts nothing."
        ),
    )


class MessageListQuerySerializer(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    before = serializers.UUIDField(required=False)
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=200)


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    sender_id = serializers.UUIDField(
        help_text="The user who sent it; for an assistant's answer, the user whose input started the turn."
    )
    author = serializers.ChoiceField(choices=Message.Author.values)
    content = serializers.CharField()
    metadata = serializers.DictField()
    timestamp = serializers.DateTimeField(source="created_at")
