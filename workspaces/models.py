from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from common.fields import MetadataField


class ConfigRecord(models.Model):
    """What every configured object has: a UUID, the guide's `metadata`, and timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    metadata = MetadataField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]


class Workspace(ConfigRecord):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workspaces")
    # The owner's monthly token budget for every participant's turns here (0: none; `usage`).
    monthly_tokens = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Conversation(ConfigRecord):
    class Responder(models.TextChoices):
        NONE = "none", "none (inputs only)"
        ECHO = "echo", "echo (development and tests)"
        LLM = "llm", "llm (OpenAI-compatible chat)"

    class ContextScope(models.TextChoices):
        CONVERSATION = "conversation", "this conversation (what every participant may read)"
        PERSONAL = "personal", "the requester's memory from everywhere (single participant only)"

    class TurnPolicy(models.TextChoices):
        QUEUE = "queue", "queue: turns run one after another"
        REJECT = "reject", "reject: an input while a turn is open is a 409"
        INTERRUPT = "interrupt", "interrupt: a new input cancels the open turns"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="conversations")
    topic = models.CharField(max_length=200)
    # Who answers an input here: nobody (the default), or an assistant turn (the `turns` app).
    responder = models.CharField(max_length=10, choices=Responder.choices, default=Responder.NONE)
    # What a turn's model request may hold: the answer and its tool results go to every
    # participant, so by default only what every participant may read (CONTRACT.md).
    context_scope = models.CharField(max_length=12, choices=ContextScope.choices, default=ContextScope.CONVERSATION)
    # What a second input does while a turn is open ("double texting").
    turn_policy = models.CharField(max_length=10, choices=TurnPolicy.choices, default=TurnPolicy.QUEUE)
    participants = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="conversations")

    def __str__(self) -> str:
        return self.topic


class Message(models.Model):
    """One accepted input, or an assistant's answer to one (`author`). `conversation` is null for
    input sent outside any conversation. An answer's `sender` is the user whose input started it."""

    class Author(models.TextChoices):
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, null=True, blank=True, related_name="messages"
    )
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=10, choices=Author.choices, default=Author.USER)
    content = models.TextField()
    metadata = MetadataField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["conversation", "-created_at", "-id"], name="message_conv_recent"),
            models.Index(fields=["sender", "-created_at"], name="message_sender_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.sender_id}: {self.content[:40]}"


class IdempotencyRecord(models.Model):
    """The first response to an `Idempotency-Key`, replayed for retries of the same request."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response = models.JSONField()
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.key}"


class Expert(models.Model):
    """An MCP server a workspace's owner registered: the core calls its tools on users' behalf.

    `tools` is the tool list as last discovered (`tools/list`), kept until `tools_expire_at` (the
    server's cache hint, within the configured bounds); `allowed_tools` (None: all) limits what
    the model and direct calls may use. An expert that could not be reached is kept with
    `status` unreachable and the reason in `last_error`.
    """

    class Auth(models.TextChoices):
        CORE_TOKEN = "core_token", "a token minted by the core for each call"
        NONE = "none", "no credentials"
        OAUTH = "oauth", "each person's own OAuth account"

    class Status(models.TextChoices):
        OK = "ok", "ok"
        UNREACHABLE = "unreachable", "unreachable"
        NEEDS_CONNECTION = "needs_connection", "no account connected yet"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="experts")
    name = models.SlugField(max_length=64)
    url = models.URLField(max_length=500)
    auth = models.CharField(max_length=16, choices=Auth.choices, default=Auth.CORE_TOKEN)
    allowed_tools = models.JSONField(null=True, blank=True, default=None)
    # {"<tool>": "auto" | "ask" | "deny"}; a tool without an entry: `policy_for`.
    tool_policy = models.JSONField(default=dict, blank=True)
    tools = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNREACHABLE)
    last_error = models.TextField(blank=True, default="")
    discovered_at = models.DateTimeField(null=True, blank=True)
    tools_expire_at = models.DateTimeField(null=True, blank=True)
    # `auth: "oauth"`: what discovery found, no secrets (`connections.oauth.Setup`): the resource,
    # the issuer and its endpoints, the client id and how it was registered, the scopes supported.
    oauth = models.JSONField(null=True, blank=True, default=None)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="expert_name_per_workspace")]

    def __str__(self) -> str:
        return self.name

    POLICIES = ("auto", "ask", "deny")

    def policy_for(self, tool: str, *, shared: bool = False) -> str:
        """`auto`, `ask` or `deny` for one tool: its `tool_policy` entry (the owner's word), else
        what the expert itself says of it (`readOnlyHint`, stored at discovery as `read_only`): a
        tool that only reads runs at once, anything else asks the requester first (a tool we know
        nothing about may act). `shared`: a turn in a conversation with other participants, who see
        its results and whose words reach the model: there a tool without an entry asks whatever
        the expert says (the expert's hint is not the owner's decision)."""
        policy = (self.tool_policy or {}).get(tool)
        if policy in self.POLICIES:
            return policy
        if shared:
            return "ask"
        entry = next((entry for entry in self.tools if entry.get("name") == tool), None)
        return "auto" if entry is not None and entry.get("read_only") is True else "ask"

    def visible_tools(self, *, shared: bool = False) -> list[dict]:
        """The discovered tools the allowlist lets through, except those denied by `tool_policy`
        (never offered to the model), each with its effective `policy` (`policy_for`)."""
        allowed = None if self.allowed_tools is None else set(self.allowed_tools)
        return [
            {**tool, "policy": policy}
            for tool in self.tools
            if (allowed is None or tool.get("name") in allowed)
            and (policy := self.policy_for(tool.get("name", ""), shared=shared)) != "deny"
        ]
