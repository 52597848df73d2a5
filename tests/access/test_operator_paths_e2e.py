"""Operator paths through the services, against real processes (issue 8): admin deletes purge
memory, the admin shows no usable token, the MCP services' credentials."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.mcp.conftest import COGNITION_TOKEN, Stack, http_client, ready, stack, wait_until
from tests.servers import (
    ROOT,
    create_users,
    free_port,
    fresh_database,
    manage_command,
    on_database,
    running,
    running_together,
    server_env,
    wait_for_port,
)

# Run in the SQLite pass only: the admin's paths and the services' credentials; deletions reaching memory between processes run in tests/mcp/test_delivery_e2e.py.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

PASSWORD = "correct-horse-battery-staple"


def make_staff() -> None:
    from accounts.models import User

    User.objects.filter(email="staff@example.com").update(is_staff=True, is_superuser=True)


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[Stack, str]]:
    with stack() as env:

        def users() -> None:  # created while the stack's processes start
            create_users("alice@example.com", "bob@example.com", "staff@example.com", password=PASSWORD, env=env.env)
            on_database(env.env, make_staff)

        with running_together(env.memory(), env.worker(), env.core(), meanwhile=users) as (_, _, core):
            yield env, core.url


class Api:
    def __init__(self, url: str, email: str) -> None:
        self.client = httpx2.Client(base_url=url, timeout=30)
        pair = self.client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        self.client.headers["Authorization"] = f"Bearer {pair['access_token']}"
        self.refresh_token = pair["refresh_token"]
        self.id = self.client.get("/auth/verify").json()["user_id"]

    def post(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()


class Admin:
    def __init__(self, url: str) -> None:
        self.client = httpx2.Client(base_url=url, timeout=30)
        page = self.client.get("/admin/login/")
        response = self.client.post(
            "/admin/login/?next=/admin/",
            data={"username": "staff@example.com", "password": PASSWORD, "csrfmiddlewaretoken": self.csrf(page.text)},
        )
        assert response.status_code == 302, response.text

    @staticmethod
    def csrf(html: str) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)

    def delete(self, model: str, pk: str) -> None:
        page = self.client.get(f"/admin/{model}/{pk}/delete/")
        assert page.status_code == 200, page.text
        done = self.client.post(
            f"/admin/{model}/{pk}/delete/", data={"post": "yes", "csrfmiddlewaretoken": self.csrf(page.text)}
        )
        assert done.status_code == 302, done.text

    def bulk_delete(self, model: str, pks: list[str]) -> None:
        page = self.client.get(f"/admin/{model}/")
        done = self.client.post(
            f"/admin/{model}/",
            data={
                "action": "delete_selected",
                "_selected_action": pks,
                "post": "yes",
                "csrfmiddlewaretoken": self.csrf(page.text),
            },
        )
        assert done.status_code == 302, done.text


async def memory_items(env: Stack, user_id: str) -> list[dict]:
    async with http_client(env.memory_url) as memory:
        return json.loads((await memory.read_resource(f"history/{user_id}")).contents[0].text)


def wait_for_memory(env: Stack, user_id: str, expected: set[str]) -> None:
    import asyncio

    def check() -> bool:
        return {item["content"] for item in asyncio.run(memory_items(env, user_id))} == expected

    wait_until(check, timeout=30, interval=0.5)


def test_admin_deletes_single_and_bulk_go_through_the_services_and_purge_memory(system):
    env, url = system
    alice, bob = Api(url, "alice@example.com"), Api(url, "bob@example.com")
    workspaces = [alice.post("/config/workspace", {"name": f"W{n}"})["workspace"]["id"] for n in range(3)]
    conversations = [
        alice.post("/config/conversation", {"workspace_id": w, "topic": "T", "participant_ids": [bob.id]})[
            "conversation"
        ]["id"]
        for w in workspaces
    ]
    for n, conversation in enumerate(conversations):
        alice.post("/input", {"content": f"alice {n}", "conversation_id": conversation})
        bob.post("/input", {"content": f"bob {n}", "conversation_id": conversation})
    bob.post("/input", {"content": "bob alone"})
    wait_for_memory(env, alice.id, {"alice 0", "alice 1", "alice 2"})
    wait_for_memory(env, bob.id, {"bob 0", "bob 1", "bob 2", "bob alone"})

    admin = Admin(url)
    admin.delete("workspaces/conversation", conversations[0])  # one conversation
    wait_for_memory(env, alice.id, {"alice 1", "alice 2"})
    wait_for_memory(env, bob.id, {"bob 1", "bob 2", "bob alone"})
    admin.bulk_delete("workspaces/workspace", [workspaces[1]])  # a workspace, by the bulk action
    wait_for_memory(env, alice.id, {"alice 2"})
    wait_for_memory(env, bob.id, {"bob 2", "bob alone"})
    admin.delete("accounts/user", bob.id)  # a user: all of their memory
    wait_for_memory(env, bob.id, set())
    wait_for_memory(env, alice.id, {"alice 2"})  # alice keeps hers
    # The API answers for alice as before; bob's token is refused.
    assert alice.client.get(f"/config/conversation/{conversations[2]}").status_code == 200
    assert bob.client.get("/auth/verify").status_code == 401


def test_the_admin_never_shows_a_usable_refresh_token(system):
    env, url = system
    alice = Api(url, "alice@example.com")
    admin = Admin(url)
    pages = [admin.client.get("/admin/token_blacklist/outstandingtoken/")]
    match = re.search(r'href="/admin/token_blacklist/outstandingtoken/(\d+)/change/', pages[0].text)
    assert match, pages[0].text[:2000]
    pages.append(admin.client.get(f"/admin/token_blacklist/outstandingtoken/{match.group(1)}/change/"))
    assert all(page.status_code == 200 for page in pages)
    signature = alice.refresh_token.rsplit(".", 1)[1]
    for page in pages:
        assert alice.refresh_token.split(".")[1] not in page.text and signature not in page.text
        assert not re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", page.text), "a JWT is on the page"


async def test_cognitions_credential_reads_memory_but_cannot_store_or_delete(system):
    env, _url = system
    user = str(uuid.uuid4())
    async with http_client(env.memory_url) as memory:  # the service token: read and write
        stored = await memory.call_tool("store_input", {"user_id": user, "input_data": {"content": "kept safe"}})
        assert not stored.is_error
    async with http_client(env.memory_url, token=COGNITION_TOKEN) as memory:
        found = await memory.call_tool("search_memory", {"user_id": user, "query": "safe"})
        assert [item["content"] for item in found.structured_content["items"]] == ["kept safe"]
        history = json.loads((await memory.read_resource(f"history/{user}")).contents[0].text)
        assert len(history) == 1
        for tool, arguments in (
            ("store_input", {"user_id": user, "input_data": {"content": "planted"}}),
            ("store_inputs", {"items": [{"user_id": user, "input_data": {"content": "planted"}}]}),
            ("delete_memory", {"user_id": user, "everything": True}),
        ):
            refused = await memory.call_tool(tool, arguments)
            assert refused.is_error and refused.structured_content["error"]["code"] == "permission_denied", tool
    assert len(await memory_items(env, user)) == 1


@pytest.mark.database_agnostic  # refused by the settings, before any database
def test_a_service_without_a_token_refuses_to_start_with_debug_off_even_on_loopback():
    for command in ("run_memory_service", "run_cognition_service"):
        result = subprocess.run(
            [sys.executable, "manage.py", command, "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=ROOT,
            env=server_env(CORTEX_SERVICE_TOKEN="", CORTEX_COGNITION_TOKEN=""),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "DEBUG off" in result.stderr, result.stderr[-2000:]
    # The normal path (debug mode on loopback) is what `make run` without a token relies on.
    server = manage_command(
        "run_memory_service",
        "--port",
        str(port := free_port()),
        port=port,
        env=server_env(DEBUG="1", CORTEX_SERVICE_TOKEN="", CORTEX_COGNITION_TOKEN=""),
    )
    with running(server):
        assert httpx2.post(f"{server.url}/mcp", json={}, timeout=5).status_code != 401


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.database_agnostic  # the supervisor's children's environments, as the other supervisor tests
def test_run_cortex_gives_the_services_no_signing_keys_and_cognition_only_its_own_credential():
    ports = free_port(), free_port(), free_port(), free_port()
    with fresh_database() as database:
        env = server_env(**database, CORTEX_COGNITION_TOKEN="")  # production mode, keys and service token set
        supervisor = manage_command(
            "run_cortex",
            "--port",
            str(ports[0]),
            "--memory-port",
            str(ports[1]),
            "--cognition-port",
            str(ports[2]),
            "--notes-port",
            str(ports[3]),
            env=env,
            port=ports[0],
        ).start()
        try:
            wait_until(lambda: ready(f"http://127.0.0.1:{ports[0]}"))
            children = {}
            for pid in _children(supervisor.process.pid):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                names = (
                    b"run_memory_service",
                    b"run_cognition_service",
                    b"run_notes_expert",
                    b"memory_outbox_worker",
                    b"turn_worker",
                    b"housekeeping",
                    b"daphne",
                    b"uvicorn",
                )
                for name in names:
                    if name in cmdline:
                        children[name.decode()] = _environ(pid)
            memory, cognition = children["run_memory_service"], children["run_cognition_service"]
            core = children.get("daphne") or children["uvicorn"]
            notes = children["run_notes_expert"]
            for service in (memory, cognition, notes):
                assert "SECRET_KEY" not in service and "JWT_SIGNING_KEY" not in service
                assert "EXPERT_SIGNING_KEYS" not in service
            assert "CORTEX_SERVICE_TOKEN" not in cognition
            # The notes expert is called with tokens the core mints: it holds no service credential.
            assert "CORTEX_SERVICE_TOKEN" not in notes and "CORTEX_COGNITION_TOKEN" not in notes
            assert core["EXPERT_SIGNING_KEYS"] == env["EXPERT_SIGNING_KEYS"]
            wait_for_port(ports[3], timeout=30)
            assert httpx2.post(f"http://127.0.0.1:{ports[3]}/mcp", json={}, timeout=5).status_code == 401
            assert (
                cognition["CORTEX_COGNITION_TOKEN"]
                and cognition["CORTEX_COGNITION_TOKEN"] != env["CORTEX_SERVICE_TOKEN"]
            )
            assert core["SECRET_KEY"] == env["SECRET_KEY"]  # the core keeps what it needs
            # Live events for any user: only the turn worker posts them, only the core takes them.
            assert (
                core["CORTEX_RELAY_TOKEN"]
                and children["turn_worker"]["CORTEX_RELAY_TOKEN"] == core["CORTEX_RELAY_TOKEN"]
            )
            for name in (
                "run_memory_service",
                "run_cognition_service",
                "run_notes_expert",
                "memory_outbox_worker",
                "housekeeping",
            ):
                assert "CORTEX_RELAY_TOKEN" not in children[name], name
                assert "CORTEX_METRICS_TOKEN" not in children[name], name
            assert "CORTEX_METRICS_TOKEN" not in children["turn_worker"]
            # Cognition works with its own credential (readyz checked it), and the core reached both.
            assert httpx2.post(f"http://127.0.0.1:{ports[1]}/mcp", json={}, timeout=5).status_code == 401
        finally:
            assert supervisor.stop(timeout=60) == 0, supervisor.log()  # three steps, each bounded by STOP_SECONDS
