from __future__ import annotations

from rest_framework import serializers

from mcp_services.experts import hosts
from workspaces.models import Expert
from workspaces.serializers import StrictCharField


class _UrlField(serializers.URLField):
    """An expert URL: http(s), and a host EXPERT_ALLOWED_HOSTS allows (else 400)."""

    def to_internal_value(self, data):
        url = super().to_internal_value(data)
        refusal = hosts.url_refusal(url)
        if refusal is not None:
            raise serializers.ValidationError(refusal, code="host_not_allowed")
        return url


def _allowlist(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=StrictCharField(max_length=128),
        max_length=200,
        allow_null=True,
        help_text="Tool names the expert may be used with (null or absent: all its tools).",
        **kwargs,
    )


def _tool_policy(**kwargs) -> serializers.DictField:
    return serializers.DictField(
        child=serializers.ChoiceField(choices=Expert.POLICIES),
        help_text="Per tool: `auto` (runs at once), `ask` (the requester approves each call in the inbox) or"
        " `deny` (never offered nor callable). A tool without an entry: `auto` when the expert marks it"
        " `readOnlyHint`, else `ask`. A PATCH replaces the whole map.",
        validators=[_at_most_200],
        **kwargs,
    )


def _at_most_200(value: dict) -> None:
    if len(value) > 200:
        raise serializers.ValidationError("At most 200 tools.")


class OAuthOptionsSerializer(serializers.Serializer):
    """`auth: "oauth"`: a client the owner registered at the expert's authorization server, if any."""

    client_id = serializers.CharField(max_length=500, required=False)
    client_secret = serializers.CharField(max_length=500, required=False, write_only=True)
    token_endpoint_auth_method = serializers.ChoiceField(
        choices=["none", "client_secret_basic", "client_secret_post"], required=False
    )
    scopes = serializers.ListField(child=StrictCharField(max_length=200), max_length=50, required=False)
    resource_indicator = serializers.BooleanField(
        required=False,
        help_text="Send RFC 8707 `resource` (default true); false only for a server that refuses it (Entra ID v2.0).",
    )


class OAuthPublicSerializer(serializers.Serializer):
    resource = serializers.CharField()
    issuer = serializers.CharField()
    registration = serializers.ChoiceField(choices=["pre_registered", "metadata_document", "dynamic"])
    scopes_supported = serializers.ListField(child=serializers.CharField(), allow_null=True)


class ExpertInputSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=64, help_text="Unique in the workspace; `/<name> <tool> <json>` calls it.")
    url = _UrlField(max_length=500, help_text="The expert's streamable HTTP MCP endpoint.")
    auth = serializers.ChoiceField(choices=Expert.Auth.choices, default=Expert.Auth.CORE_TOKEN)
    tools = _allowlist(required=False, default=None)
    tool_policy = _tool_policy(required=False, default=dict)
    oauth = OAuthOptionsSerializer(required=False, default=dict)


class ExpertPatchSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=64, required=False)
    url = _UrlField(max_length=500, required=False)
    auth = serializers.ChoiceField(choices=Expert.Auth.choices, required=False)
    tools = _allowlist(required=False)
    tool_policy = _tool_policy(required=False)
    oauth = OAuthOptionsSerializer(required=False)


class ExpertToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.DictField()
    read_only_hint = serializers.BooleanField(
        source="read_only", default=False, help_text="The expert marks it `readOnlyHint`."
    )
    policy = serializers.ChoiceField(choices=["auto", "ask"], help_text="What a call of it does (see `tool_policy`).")


class ExpertOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    workspace_id = serializers.UUIDField()
    name = serializers.CharField()
    url = serializers.CharField()
    auth = serializers.CharField()
    status = serializers.ChoiceField(choices=Expert.Status.choices)
    tools = serializers.SerializerMethodField(
        help_text="The discovered tools the allowlist lets through (and `tool_policy` does not deny)."
    )
    allowed_tools = serializers.ListField(child=serializers.CharField(), allow_null=True)
    tool_policy = serializers.DictField(child=serializers.CharField())
    last_error = serializers.CharField(help_text="Why the last discovery failed (empty when it worked).")
    discovered_at = serializers.DateTimeField(allow_null=True)
    tools_expire_at = serializers.DateTimeField(
        allow_null=True, help_text="Until when the cached tools are used (the expert's cache hint)."
    )
    oauth = OAuthPublicSerializer(
        allow_null=True, help_text='`auth: "oauth"`: the resource, its authorization server and the registration.'
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_tools(self, expert: Expert) -> list[dict]:
        return ExpertToolSerializer(expert.visible_tools(), many=True).data  # type: ignore[return-value]
