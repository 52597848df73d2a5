"""The audit log against the real database, through the API: every audited action leaves exactly
one entry, in the action's transaction; a person reads only their own; nobody changes or deletes
an entry (the admin included); erasure strips them; housekeeping prunes them. alice acts, bob
reads his own record, charlie is an outsider."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.services import user_delete
from audit.models import AuditEntry
from common.errors import CortexError
from conftest import client_for
from tests.factories import PASSWORD
from tests.turns.test_inbox_api import waiting  # noqa: F401 - the fixture
from turns.inbox.models import InboxRequest

pytestmark = pytest.mark.django_db


def entries(action: str, **filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, **filters))


def recorded():
    """Entries but the factories' own: a factory sets each actor's password after creating it."""
    return AuditEntry.objects.exclude(action="auth.password_changed")


def login(api, email="alice@example.com", password=PASSWORD):
    return api.post("/auth/login", {"email": email, "password": password}, format="json")


def test_a_password_sign_in_and_a_failed_one_each_leave_one_entry(api, alice):
    assert login(api).status_code == 200
    [entry] = entries("auth.login", actor_id=alice.id)
    assert entry.detail == {"method": "password"} and entry.ip == "127.0.0.1"
    assert login(api, password="wrong").status_code == 401
    [failed] = entries("auth.login_failed", actor_id=alice.id)
    assert failed.detail == {"method": "password"}
    assert login(api, email="nobody@example.com").status_code == 401
    [unknown] = entries("auth.login_failed", actor_id=None)
    assert unknown.target == "nobody@example.com"  # in nobody's own record
    assert recorded().count() == 3


def test_refresh_reuse_logout_and_password_change_each_leave_one_entry(api, alice):
    pair = login(api).json()
    fresh = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json").json()
    assert recorded().filter(actor_id=alice.id).count() == 1  # a plain refresh is not audited
    reused = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")
    assert reused.status_code == 401
    [reuse] = entries("auth.refresh_reuse", actor_id=alice.id)
    assert reuse.detail["family_id"]
    second = login(api).json()
    assert api.post("/auth/logout", {"refresh_token": second["refresh_token"]}, format="json").status_code == 204
    assert len(entries("auth.logout", actor_id=alice.id)) == 1
    assert fresh  # (its family is revoked by the reuse)
    before = len(entries("auth.password_changed", actor_id=alice.id))
    alice.set_password("another-long-password")
    alice.save()
    assert len(entries("auth.password_changed", actor_id=alice.id)) == before + 1
    alice.name = "Alice A."
    alice.save(update_fields=["name"])  # not a password change
    assert len(entries("auth.password_changed", actor_id=alice.id)) == before + 1


def test_an_approval_answer_leaves_one_entry(waiting, alice):  # noqa: F811 - the fixture
    request = InboxRequest.objects.get(turn=waiting)
    response = client_for(alice).post(f"/inbox/{request.id}/answer", {"decision": "approve"}, format="json")
    assert response.status_code == 200, response.content
    [entry] = entries("inbox.approval_answered", actor_id=alice.id)
    assert entry.target == str(request.id)
    assert entry.detail == {"turn_id": str(waiting.id), "expert": "notes", "decision": "approve"}
    again = client_for(alice).post(f"/inbox/{request.id}/answer", {"decision": "deny"}, format="json")
    assert again.status_code == 409
    assert len(entries("inbox.approval_answered")) == 1  # the refused answer rolled back with its entry


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_experts_registered_changed_and_deleted_each_leave_one_entry(alice, workspace):
    client = client_for(alice)
    url = f"http://127.0.0.1:{_unused_port()}/mcp"
    created = client.post(
        f"/config/workspace/{workspace.id}/experts", {"name": "later", "url": url, "auth": "none"}, format="json"
    )
    assert created.status_code == 201, created.content
    expert_id = created.json()["expert"]["id"]
    [registered] = entries("expert.registered", actor_id=alice.id)
    assert registered.target == expert_id and registered.detail["url"] == url
    patched = client.patch(
        f"/config/workspace/{workspace.id}/experts/{expert_id}", {"tool_policy": {"x": "deny"}}, format="json"
    )
    assert patched.status_code == 200, patched.content
    [changed] = entries("expert.changed", actor_id=alice.id)
    assert changed.detail == {"workspace_id": str(workspace.id), "changed": ["tool_policy"]}
    assert client.delete(f"/config/workspace/{workspace.id}/experts/{expert_id}").status_code == 204
    assert len(entries("expert.deleted", actor_id=alice.id)) == 1
    assert recorded().count() == 3


def test_a_refused_change_leaves_no_entry(alice, bob, workspace):
    url = f"http://127.0.0.1:{_unused_port()}/mcp"
    response = client_for(bob).post(
        f"/config/workspace/{workspace.id}/experts", {"name": "x", "url": url, "auth": "none"}, format="json"
    )
    assert response.status_code == 404
    assert recorded().count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_export_leaves_one_entry_and_carries_the_record(alice):
    client = client_for(alice)
    login(client)
    response = client.get("/account/export")

    async def read() -> bytes:  # up to the memory items (no memory service runs here)
        chunks = []
        with contextlib.suppress(CortexError):
            async for chunk in response.streaming_content:
                chunks.append(chunk)
        return b"".join(chunks)

    body = asyncio.run(read()).decode()
    assert len(entries("account.exported", actor_id=alice.id)) == 1
    assert '"type":"audit_entry"' in body and '"action":"auth.login"' in body
    assert body.count('"type":"audit_entry"') == 2  # the sign-in, and the export itself (written as it starts)


def test_account_audit_shows_my_own_entries_newest_first_in_pages(api, alice, bob):
    for _ in range(3):
        login(api)
    login(api, email="bob@example.com")
    client = client_for(alice)
    first = client.get("/account/audit", {"limit": 2}).json()
    assert [item["action"] for item in first["items"]] == ["auth.login", "auth.login"]
    assert first["items"][0]["id"] > first["items"][1]["id"]
    assert set(first["items"][0]) == {"id", "at", "action", "ip", "detail"}
    rest = client.get("/account/audit", {"cursor": first["next_cursor"], "limit": 2}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert len(client_for(bob).get("/account/audit").json()["items"]) == 1  # only bob's own
    assert client.get("/account/audit", {"cursor": "x"}).status_code == 400
    assert client_for(None).get("/account/audit").status_code == 401


def test_erasure_keeps_the_entries_with_nothing_personal_but_the_id(api, alice):
    login(api)
    user_id = alice.id
    user_delete(user=alice)
    kept = list(recorded().filter(actor_id=user_id).order_by("id"))
    assert [entry.action for entry in kept] == ["auth.login", "account.erased"]
    assert all(entry.ip is None and entry.target == "" and entry.detail == {} for entry in kept)


def test_entries_are_append_only_and_housekeeping_prunes_them_after_the_retention(settings, alice):
    login(client_for(None))
    entry = recorded().get()
    entry.action = "edited"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    settings.CORTEX = {**settings.CORTEX, "AUDIT_RETENTION_DAYS": 30}
    AuditEntry.objects.filter(pk=entry.pk).update(at=timezone.now() - timedelta(days=31))
    login(client_for(None))
    call_command("housekeeping")
    assert [e.action for e in AuditEntry.objects.all()] == ["auth.login"]
    assert AuditEntry.objects.get().pk != entry.pk


def test_the_admin_refuses_to_add_change_or_delete_even_for_a_superuser(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root@example.com", PASSWORD)
    client.force_login(admin)
    entry = AuditEntry.objects.create(action="auth.login", detail={"method": "password"})
    base = "/admin/audit/auditentry/"
    assert client.get(base).status_code == 200
    assert client.get(f"{base}{entry.pk}/change/").status_code == 200  # a view, not a form
    changed = client.post(f"{base}{entry.pk}/change/", {"action": "edited"})
    assert changed.status_code == 403
    assert client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get(f"{base}add/").status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).action == "auth.login"


def test_schedules_and_webhooks_created_rotated_and_deleted_each_leave_one_entry(bob, conversation, settings):
    from tests.schedules.test_schedules_api import create as schedule_create
    from tests.webhooks.test_webhooks_api import URL

    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com", "127.0.0.1:*"]
    schedule_id = schedule_create(bob, conversation).json()["schedule"]["id"]
    [made] = entries("schedule.created", actor_id=bob.id)
    assert made.target == schedule_id and made.detail == {"cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"}
    assert client_for(bob).delete(f"/schedules/{schedule_id}").status_code == 204
    assert len(entries("schedule.deleted", actor_id=bob.id, target=schedule_id)) == 1
    api = client_for(bob)
    created = api.post("/webhooks", {"url": URL, "events": ["*"]}, format="json")
    assert created.status_code == 201, created.json()
    webhook_id = created.json()["webhook"]["id"]
    secret = created.json()["secret"]
    assert api.post(f"/webhooks/{webhook_id}/rotate-secret").status_code == 200
    assert api.delete(f"/webhooks/{webhook_id}").status_code == 204
    for action in ("webhook.created", "webhook.secret_rotated", "webhook.deleted"):
        [entry] = entries(action, actor_id=bob.id, target=webhook_id)
        assert secret not in str(entry.detail)
    assert recorded().filter(actor_id=bob.id).count() == 5
