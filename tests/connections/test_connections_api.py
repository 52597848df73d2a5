"""Connections without a network: encryption at rest (rotation, no default key outside debug), the
client ID metadata document, who sees which connection, what the admin shows, and the calls'
refusals before any request (not connected, needs reconsent)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from common.errors import CortexError
from conftest import client_for
from connections import crypto, services
from connections.models import Connection, OAuthClient
from mcp_services.experts.credentials import ExpertNeedsConnection
from workspaces.models import Expert

pytestmark = pytest.mark.django_db

SETUP = {
    "resource": "https://tracker.example/mcp",
    "issuer": "https://auth.tracker.example",
    "registration": "dynamic",
    "client_id": "cortex-1",
    "authorization_endpoint": "https://auth.tracker.example/authorize",
    "token_endpoint": "https://auth.tracker.example/token",
    "revocation_endpoint": None,
    "scopes_supported": ["tickets:read"],
    "challenge_scopes": None,
    "iss_supported": True,
}


@pytest.fixture
def tracker(workspace, conversation) -> Expert:
    OAuthClient.objects.create(
        issuer=SETUP["issuer"], client_id="cortex-1", registration="dynamic", client_secret=crypto.seal("s3cret")
    )
    return Expert.objects.create(
        workspace=workspace, name="tracker", url=SETUP["resource"], auth="oauth", status="needs_connection", oauth=SETUP
    )


def _connect(user, expert, *, access="at-1", refresh="rt-1", status="connected") -> Connection:
    return Connection.objects.create(
        user=user,
        expert=expert,
        client=OAuthClient.objects.get(client_id="cortex-1"),
        issuer=SETUP["issuer"],
        status=status,
        scopes=["tickets:read"],
        access_token=crypto.seal(access),
        refresh_token=crypto.seal(refresh),
    )


def test_secrets_are_encrypted_and_keys_rotate(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OAUTH_TOKEN_KEYS = [old]
    sealed = crypto.seal("a token")
    assert b"a token" not in sealed
    settings.OAUTH_TOKEN_KEYS = [new, old]  # the new key first: old rows still read
    assert crypto.unseal(sealed) == "a token"
    resealed = crypto.reseal(sealed)
    settings.OAUTH_TOKEN_KEYS = [new]  # the old key dropped once rows are re-encrypted
    assert crypto.unseal(resealed) == "a token"
    with pytest.raises(CortexError):
        crypto.unseal(sealed)


def test_no_default_key_outside_debug(settings):
    settings.OAUTH_TOKEN_KEYS, settings.DEBUG = [], False
    with pytest.raises(CortexError) as refused:
        crypto.seal("a token")
    assert "OAUTH_TOKEN_KEYS" in refused.value.message


def test_client_metadata_document_is_public(settings):
    settings.OAUTH_PUBLIC_URL = "https://cortex.example.com"
    settings.OAUTH_CLIENT_METADATA_URL = ""
    document = Client().get("/.well-known/oauth-client.json").json()
    assert document["client_id"] == "https://cortex.example.com/.well-known/oauth-client.json"
    assert document["redirect_uris"] == ["https://cortex.example.com/oauth/callback"]
    assert document["token_endpoint_auth_method"] == "none" and document["application_type"] == "web"


def test_connections_list_each_oauth_expert_the_caller_may_use(alice, bob, charlie, tracker):
    _connect(alice, tracker)
    mine = client_for(alice).get("/connections").json()["connections"]
    assert [(item["expert"], item["status"], item["scopes"]) for item in mine] == [
        ("tracker", "connected", ["tickets:read"])
    ]
    assert "at-1" not in str(mine)
    assert client_for(bob).get("/connections").json()["connections"][0]["status"] == "not_connected"
    assert client_for(charlie).get("/connections").json()["connections"] == []
    assert client_for(charlie).post(f"/connections/{tracker.id}", {}, format="json").status_code == 404


def test_starting_a_flow_sets_an_httponly_cookie_and_asks_with_pkce_and_resource(alice, tracker):
    response = client_for(alice).post(f"/connections/{tracker.id}", {"return_to": "/console/"}, format="json")
    assert response.status_code == 200, response.content
    url = response.json()["authorization_url"]
    assert url.startswith(SETUP["authorization_endpoint"] + "?")
    for part in (
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "resource=https%3A%2F%2Ftracker.example%2Fmcp",
        "scope=tickets%3Aread",
        "client_id=cortex-1",
    ):
        assert part in url
    cookie = response.cookies["cortex_oauth_flow"]
    assert cookie["httponly"] and cookie["path"] == "/oauth/callback" and cookie["samesite"] == "Lax"
    refused = client_for(alice).post(f"/connections/{tracker.id}", {"return_to": "//evil.example"}, format="json")
    assert refused.status_code == 400


def test_callback_with_an_unknown_state_goes_back_with_an_error(db):
    response = Client().get("/oauth/callback", {"state": "nope", "code": "x"})
    assert response.status_code == 302 and response["Location"] == "/console/?connect_error=invalid_state"


def test_a_call_without_a_connection_or_needing_reconsent_asks_to_connect(alice, bob, tracker):
    with pytest.raises(ExpertNeedsConnection) as needs:
        services.bearer(expert_id=tracker.id, user_id=alice.id)
    assert (needs.value.reason, needs.value.scopes, needs.value.expert) == (
        "not_connected",
        ["tickets:read"],
        "tracker",
    )
    _connect(bob, tracker, status="needs_reconsent")
    with pytest.raises(ExpertNeedsConnection) as again:
        services.bearer(expert_id=tracker.id, user_id=bob.id)
    assert again.value.reason == "needs_reconsent"


def test_a_token_not_due_is_used_as_it_is_and_only_the_requesters(alice, bob, tracker):
    _connect(alice, tracker, access="alice-token")
    _connect(bob, tracker, access="bob-token")
    assert services.bearer(expert_id=tracker.id, user_id=alice.id) == "alice-token"
    assert services.bearer(expert_id=tracker.id, user_id=bob.id) == "bob-token"
    # A 401 on a token someone already replaced: the replacement, no second refresh.
    assert services.bearer(expert_id=tracker.id, user_id=alice.id, stale="an-older-token") == "alice-token"


def test_the_admin_lists_connections_without_tokens(alice, tracker):
    _connect(alice, tracker, access="secret-access-token", refresh="secret-refresh-token")
    alice.is_staff = alice.is_superuser = True
    alice.save()
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/admin/connections/connection/")
    assert page.status_code == 200 and b"tracker" in page.content
    detail = browser.get(f"/admin/connections/connection/{Connection.objects.get().id}/change/")
    assert detail.status_code == 200
    for secret in (b"secret-access-token", b"secret-refresh-token"):
        assert secret not in page.content and secret not in detail.content


def test_leaving_the_workspace_or_deleting_the_expert_removes_the_connections(
    alice, bob, tracker, conversation, django_capture_on_commit_callbacks
):
    _connect(alice, tracker)
    _connect(bob, tracker)
    with django_capture_on_commit_callbacks(execute=True):
        conversation.participants.remove(bob)  # bob takes part in no conversation of the workspace now
    assert list(Connection.objects.values_list("user_id", flat=True)) == [alice.id]
    with django_capture_on_commit_callbacks(execute=True):
        tracker.delete()
    assert not Connection.objects.exists()


def test_rotating_keys_re_encrypts_every_row(settings, alice, tracker):
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OAUTH_TOKEN_KEYS = [old]
    OAuthClient.objects.filter(client_id="cortex-1").update(client_secret=crypto.seal("s3cret"))
    _connect(alice, tracker, access="at-9", refresh="rt-9")
    settings.OAUTH_TOKEN_KEYS = [new, old]
    call_command("connections_rotate_keys")
    settings.OAUTH_TOKEN_KEYS = [new]
    connection = Connection.objects.get()
    assert (crypto.unseal(connection.access_token), crypto.unseal(connection.refresh_token)) == ("at-9", "rt-9")
    assert crypto.unseal(OAuthClient.objects.get(client_id="cortex-1").client_secret) == "s3cret"
