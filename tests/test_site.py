"""Settings, errors, health, schema, admin and the user commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from accounts.models import User
from tests.factories import ConversationFactory, WorkspaceFactory
from workspaces.services import message_create

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "SECRET_KEY": "s" * 40,
    "JWT_SIGNING_KEY": "j" * 40,
    "ALLOWED_HOSTS": "cortex.example.com",
}


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {*GOOD, "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import cortex_site.settings as s; print(s.DEBUG)"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
@pytest.mark.database_agnostic
@pytest.mark.parametrize("missing", sorted(GOOD))
def test_startup_refuses_production_without_required_setting(missing):
    env = {k: v for k, v in GOOD.items() if k != missing}
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


@pytest.mark.e2e
@pytest.mark.database_agnostic
@pytest.mark.parametrize(
    "env, message",
    [
        ({**GOOD, "ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS"),
        ({**GOOD, "JWT_SIGNING_KEY": "s" * 40}, "JWT_SIGNING_KEY must differ"),
        ({**GOOD, "SECRET_KEY": "short"}, "at least 32"),
        ({**GOOD, "DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({**GOOD, "MAX_CONTENT_CHARS": "lots"}, "MAX_CONTENT_CHARS must be an integer"),
        ({**GOOD, "DATABASE_URL": "mysql://x@y/z"}, "postgres"),
    ],
)
def test_startup_refuses_insecure_or_malformed_settings(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_debug_is_off_by_default_and_production_settings_load():
    result = load_settings(**GOOD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_debug_mode_runs_without_secrets():
    result = load_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_root_and_healthz(client):
    assert client.get("/").json() == {"status": "online", "service": "Cortex Core"}
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_unknown_url_is_a_json_404_in_every_mode(client, settings, debug):
    settings.DEBUG = debug
    response = client.get("/does/not/exist")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize("method, path", [("delete", "/auth/login"), ("post", "/healthz"), ("put", "/readyz")])
def test_wrong_method_is_405_envelope_in_every_mode(client, settings, debug, method, path):
    settings.DEBUG = debug
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"]


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_crash_in_a_plain_view_is_a_500_envelope_in_every_mode(settings, debug, monkeypatch):
    from operations import health

    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    monkeypatch.setattr(health.readiness, "report", lambda: 1 / 0)  # an injected fault: a bug in the view
    response = client.get("/readyz")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "An internal error occurred."}}
    assert b"Traceback" not in response.content


def test_admin_and_docs_keep_their_own_pages(client, settings):
    settings.DEBUG = True
    assert client.get("/admin/login/")["Content-Type"].startswith("text/html")
    assert client.get("/docs")["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_unexpected_error_is_a_500_envelope_without_traceback(alice):
    from django.db import connection

    from conftest import client_for

    client = client_for(alice)
    # Break the database under the view (rolled back with the test's transaction).
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE workspaces_idempotencyrecord")
    response = client.post("/input", {"content": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "An internal error occurred."}}
    assert b"idempotencyrecord" not in response.content and b"Traceback" not in response.content


def test_openapi_schema_declares_bearer_auth(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    for path in [
        "/input",
        "/auth/login",
        "/config/workspace",
        "/config/conversation/{conversation_id}",
        "/messages",
        "/output/stream",
        "/output/ws",
        "/output/ticket",
        "/context",
        "/config/workspace/{workspace_id}/experts",
        "/config/workspace/{workspace_id}/experts/{expert_id}",
        "/config/workspace/{workspace_id}/experts/{expert_id}/refresh",
        "/.well-known/jwks.json",
    ]:
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200


@pytest.mark.django_db
def test_admin_changelists_render_for_superuser_and_are_refused_to_others(alice, bob):
    admin_user = User.objects.create_superuser(email="root@example.com", password="pw-for-admin-0", name="Root")
    workspace = WorkspaceFactory(owner=alice)
    conversation = ConversationFactory(workspace=workspace, participants=[bob])
    message_create(sender=alice, content="hello", conversation=conversation)
    from django.contrib import admin

    import cortex_site.urls  # noqa: F401 - the URLconf registers the apps' models (common.admin.AdminConfig)

    urls = [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in admin.site._registry]
    assert {
        "/admin/accounts/user/",
        "/admin/workspaces/workspace/",
        "/admin/workspaces/conversation/",
        "/admin/workspaces/message/",
    } <= set(urls)
    staff = Client()
    staff.force_login(admin_user)
    for url in urls:
        response = staff.get(url)
        assert response.status_code == 200, url
        search = staff.get(url, {"q": "hello"})
        assert search.status_code == 200, url
    for obj in [alice, workspace, conversation, conversation.messages.first()]:
        url = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"
        assert staff.get(url).status_code == 200, url

    outsider = Client()
    outsider.force_login(alice)  # an ordinary user, not staff
    for url in urls:
        response = outsider.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


@pytest.mark.django_db
def test_create_user_command_reads_password_from_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("a-long-enough-passphrase\n")
    call_command("create_user", "--email", "New@Example.com", "--name", "New", "--password-file", str(secret))
    user = User.objects.get(email="new@example.com")
    assert user.check_password("a-long-enough-passphrase") and user.name == "New" and not user.is_staff
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "--email", "new@example.com", "--password-file", str(secret))


@pytest.mark.django_db
def test_create_user_command_rejects_weak_password_and_needs_a_source(tmp_path, monkeypatch):
    weak = tmp_path / "pw"
    weak.write_text("123\n")
    with pytest.raises(CommandError):
        call_command("create_user", "--email", "weak@example.com", "--password-file", str(weak))
    monkeypatch.delenv("CORTEX_USER_PASSWORD", raising=False)
    monkeypatch.setattr(os, "isatty", lambda fd: False)  # no terminal to prompt on, as under CI
    with pytest.raises(CommandError, match="No password"):
        call_command("create_user", "--email", "nopw@example.com")
    assert not User.objects.filter(email__in=["weak@example.com", "nopw@example.com"]).exists()


@pytest.mark.django_db
def test_demo_user_exists_only_in_debug(settings):
    with pytest.raises(CommandError):
        call_command("ensure_demo_user")
    settings.DEBUG = True
    call_command("ensure_demo_user")
    call_command("ensure_demo_user")  # idempotent
    assert User.objects.get(email="user@example.com").check_password("password123")


def test_admin_static_files_are_served_without_debug(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_openapi_schema_is_valid_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


def test_docs_load_only_local_assets(client):
    """Swagger UI from the pinned sidecar package: every asset the page names is served here (200),
    and nothing points off the machine (no CDN, no validator badge)."""
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    html = page.content.decode()
    urls = set(re.findall(r'(?:src|href)="([^"]+)"', html)) | set(re.findall(r'url: "([^"]+)"', html))
    assert urls, html
    assert not re.search(r"https?://", html), html
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    for url in urls:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
    assert client.get("/openapi.json").status_code == 200
