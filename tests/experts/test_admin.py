from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from workspaces import services
from workspaces.models import Expert

pytestmark = pytest.mark.django_db


def test_the_admin_shows_experts_read_only_and_deletes_through_the_service(workspace):
    expert = services.expert_create(
        workspace=workspace,
        name="notes",
        url="http://127.0.0.1:9200/mcp",
        discovery=services.ExpertDiscovery(
            status="unreachable", tools=[], last_error="The expert is unreachable: ConnectError"
        ),
    )
    staff = Client()
    staff.force_login(User.objects.create_superuser(email="root@example.com", password="pw-for-admin-0", name="R"))
    listing = staff.get("/admin/workspaces/expert/", {"q": "notes"})
    assert listing.status_code == 200 and b"unreachable" in listing.content
    page = staff.get(f"/admin/workspaces/expert/{expert.pk}/change/")
    assert page.status_code == 200 and b"ConnectError" in page.content
    assert b'name="_save"' not in page.content, "inspection only: changes go through the API"
    assert staff.get("/admin/workspaces/expert/add/").status_code == 403
    deleted = staff.post(f"/admin/workspaces/expert/{expert.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not Expert.objects.exists()
