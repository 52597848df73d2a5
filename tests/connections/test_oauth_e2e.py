"""Experts behind each person's own OAuth account, end to end, against a real authorization server:
django-oauth-toolkit in its own process (`tests/oauth_server`: PKCE required, rotating refresh
tokens whose reuse revokes the grant, dynamic registration, client ID metadata documents), an MCP
expert built with the SDK's resource-server support in front of it (`tests/oauth_expert.py`:
protected-resource metadata, tokens checked by introspection, scopes), two core processes and two
turn workers sharing one database. The browser's part of connecting (the authorization request,
the redirect to the callback with the flow's cookie) is driven over HTTP; the test server gives
consent at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tests.connections.servers import authorization_server, oauth_expert, stats
from tests.servers import (
    ServerProcess,
    core_server,
    create_users,
    free_port,
    fresh_database,
    manage_command,
    running_together,
    server_env,
)
from tests.streaming.clients import SSEStream, login

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
USERS = ("alice@example.com", "bob@example.com", "carol@example.com")
ENV = {
    "SSE_HEARTBEAT_SECONDS": "1",
    "LOG_LEVEL": "WARNING",
    "INPUT_RATE": "100000/min",
    "TURN_POLL_MS": "50",
    "TURN_MAX_RUNNING_PER_USER": "20",
    "EXPERT_DISCOVERY_RATE": "1000/min",
    "COGNITION_URL": f"http://127.0.0.1:{free_port()}/mcp",
    "SERVICE_TIMEOUT_SECONDS": "2",
}
TERMINAL = {"assistant.completed", "assistant.failed", "assistant.cancelled"}


@dataclass
class Site:
    cores: list[str]
    env: dict[str, str]
    as_url: str
    rs_url: str
    tokens: dict[str, str]
    user_ids: dict[str, str]
    workspace_id: str

    @property
    def url(self) -> str:
        return self.cores[0]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def register(self, name: str, path: str, **oauth: object) -> httpx2.Response:
        return httpx2.post(
            f"{self.url}/config/workspace/{self.workspace_id}/experts",
            json={
                "name": name,
                "url": f"{self.rs_url}/{path}/mcp",
                "auth": "oauth",
                "oauth": oauth,
                "tool_policy": {"whoami": "auto", "tickets": "auto", "write_ticket": "auto"},
            },
            headers=self.auth("alice"),
            timeout=30,
        )

    def conversation(self) -> str:
        response = httpx2.post(
            f"{self.url}/config/conversation",
            json={
                "workspace_id": self.workspace_id,
                "topic": "t",
                "responder": "none",
                "participant_ids": [self.user_ids["bob"]],
            },
            headers=self.auth("alice"),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()["conversation"]["id"]

    def post(self, who: str, conversation_id: str, content: str, core: int = 0) -> str:
        response = httpx2.post(
            f"{self.cores[core]}/input",
            json={"content": content, "conversation_id": conversation_id},
            headers=self.auth(who),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()["turn_id"]

    def stream(self, who: str) -> SSEStream:
        return SSEStream(self.url, token=self.tokens[who])

    def connect(
        self, who: str, expert_id: str, *, tamper: dict[str, str] | None = None, cookie: str | None = None
    ) -> str:
        """The browser's part: start, follow the authorization server, come back to the callback
        (with the flow's cookie, unless `cookie` replaces it). Returns where the core sends it."""
        started = httpx2.post(
            f"{self.url}/connections/{expert_id}", json={"return_to": "/console/"}, headers=self.auth(who), timeout=30
        )
        assert started.status_code == 200, started.text
        flow_cookie = started.cookies["cortex_oauth_flow"]
        at_server = httpx2.get(started.json()["authorization_url"], cookies={"as_user": who}, timeout=30)
        assert at_server.status_code == 302, at_server.text[:2000]
        back = at_server.headers["location"]
        for key, value in (tamper or {}).items():
            back = _with_param(back, key, value)
        assert back.startswith(f"{self.url}/oauth/callback?")
        done = httpx2.get(back, cookies={"cortex_oauth_flow": flow_cookie if cookie is None else cookie}, timeout=30)
        assert done.status_code == 302, done.text
        return done.headers["location"]

    def connections(self, who: str) -> dict[str, dict]:
        answer = httpx2.get(f"{self.url}/connections", headers=self.auth(who), timeout=10)
        assert answer.status_code == 200, answer.text
        return {item["expert"]: item for item in answer.json()["connections"]}


def _with_param(url: str, key: str, value: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def until_end(stream: SSEStream, turn_id: str, *, timeout: float = 45) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, event = stream.event(timeout=deadline - time.monotonic())
        if event.get("data", {}).get("turn_id") != turn_id:
            continue
        events.append(event)
        if event["type"] in TERMINAL or event["type"] == "question.asked":
            return events
    raise TimeoutError(f"turn {turn_id} did not end: {[e['type'] for e in events]}")


def _expire_in_core(site: Site, expert_id: str) -> None:
    """The core's own record of the access token's expiry set in the past (a process start of
    `manage.py shell` costs seconds on a loaded machine: the row is updated directly)."""
    if "DATABASE_URL" in site.env:
        import psycopg

        with psycopg.connect(site.env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(
                "UPDATE connections_connection SET expires_at = now() - interval '5 seconds' WHERE expert_id = %s",
                (expert_id,),
            )
        return
    past = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.closing(sqlite3.connect(site.env["SQLITE_PATH"], timeout=30)) as conn, conn:
        conn.execute(
            "UPDATE connections_connection SET expires_at = ? WHERE expert_id = ?", (past, uuid.UUID(expert_id).hex)
        )


def turn_worker(env: dict[str, str]) -> ServerProcess:
    return manage_command("turn_worker", env=env, port=0, ready_line="turn worker: running")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    auth_server = authorization_server()
    # The expert asks the authorization server only when it introspects a token.
    with fresh_database() as db_env, running_together(auth_server, oauth_expert(auth_server.url)) as (_, expert):
        port = free_port()
        core_url = f"http://127.0.0.1:{port}"
        base = server_env(**db_env, **ENV, OAUTH_PUBLIC_URL=core_url)
        env = {**base, "CORTEX_CORE_URL": core_url}
        first, second = core_server(env=base, port=port), core_server(env=base)
        workers = turn_worker(env), turn_worker(env)
        with running_together(
            first, second, *workers, meanwhile=lambda: create_users(*USERS, password=PASSWORD, env=base)
        ):
            tokens = {email.split("@")[0]: login(core_url, email, PASSWORD) for email in USERS}
            user_ids = {
                who: httpx2.get(f"{core_url}/auth/verify", headers={"Authorization": f"Bearer {t}"}).json()["user_id"]
                for who, t in tokens.items()
            }
            workspace = httpx2.post(
                f"{core_url}/config/workspace",
                json={"name": "W"},
                headers={"Authorization": f"Bearer {tokens['alice']}"},
            ).json()["workspace"]
            made = Site([first.url, second.url], env, auth_server.url, expert.url, tokens, user_ids, workspace["id"])
            made.conversation()  # alice and bob take part in the workspace (the experts serve them)
            yield made


@pytest.fixture(scope="module")
def tickets(site: Site) -> dict:
    """The expert most tests use: metadata found from the 401's header, a dynamic client."""
    registered = site.register("tickets", "header/dcr")
    assert registered.status_code == 201, registered.text
    return registered.json()["expert"]


# -- discovery and registration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "issuer", "registration"),
    [
        ("header/dcr", "/dcr", "dynamic"),  # resource_metadata from the 401
        ("path/cimd", "/cimd", "metadata_document"),  # the path-scoped well-known URL only
        ("root/root", "", "metadata_document"),  # the root well-known URL only (and RFC 8414 at the root)
        ("header/oidc", "/oidc", "dynamic"),  # the authorization server has OpenID discovery only
    ],
)
@pytest.mark.database_agnostic  # the OAuth dance with the test server: the wire
def test_each_discovery_variant_finds_the_authorization_server(site, path, issuer, registration):
    name = "d-" + path.replace("/", "-")
    registered = site.register(name, path)
    assert registered.status_code == 201, registered.text
    expert = registered.json()["expert"]
    assert expert["status"] == "needs_connection" and expert["auth"] == "oauth"
    assert expert["oauth"]["issuer"] == f"{site.as_url}{issuer}"
    assert expert["oauth"]["registration"] == registration
    assert expert["oauth"]["scopes_supported"] == ["tickets:read"]
    assert "client_secret" not in registered.text and "client_id" not in expert["oauth"]


@pytest.mark.database_agnostic  # the OAuth dance: the wire
def test_metadata_naming_another_issuer_is_refused(site):
    refused = site.register("liar", "header/liar")
    assert refused.status_code == 400, refused.text
    assert "issuer" in refused.json()["error"]["message"]


@pytest.mark.database_agnostic  # the OAuth dance: the wire
def test_registration_without_any_way_is_a_400_saying_what_to_give_then_a_pre_registered_client(site):
    refused = site.register("closed", "header/none")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert "oauth.client_id" in error["fields"] and f"{site.url}/oauth/callback" in error["message"]

    made = httpx2.post(
        f"{site.as_url}/test/application", json={"redirect_uri": f"{site.url}/oauth/callback"}, timeout=10
    ).json()
    registered = site.register(
        "closed", "header/none", client_id=made["client_id"], client_secret=made["client_secret"]
    )
    assert registered.status_code == 201, registered.text
    expert = registered.json()["expert"]
    assert expert["oauth"]["registration"] == "pre_registered"
    assert made["client_secret"] not in registered.text
    # The pre-registered confidential client connects (client_secret_basic at the token endpoint).
    back = site.connect("alice", expert["id"])
    assert back == f"/console/?connected={expert['id']}"


@pytest.mark.database_agnostic  # the OAuth dance: the wire
def test_client_metadata_document_is_served_and_used(site):
    document = httpx2.get(f"{site.url}/.well-known/oauth-client.json", timeout=10).json()
    assert document["client_id"] == f"{site.url}/.well-known/oauth-client.json"
    assert document["redirect_uris"] == [f"{site.url}/oauth/callback"]
    registered = site.register("cimd", "header/cimd")
    assert registered.status_code == 201, registered.text
    before = stats(site.as_url)["counts"].get("metadata_documents", 0)
    back = site.connect("alice", registered.json()["expert"]["id"])
    assert back.endswith(f"connected={registered.json()['expert']['id']}")
    assert stats(site.as_url)["counts"]["metadata_documents"] > before  # the server fetched our document


# -- connecting -------------------------------------------------------------------------------


@pytest.mark.database_agnostic  # the OAuth dance: the wire
def test_wrong_state_cookie_or_issuer_is_refused(site, tickets):
    assert site.connect("alice", tickets["id"], tamper={"state": "forged"}).endswith("connect_error=invalid_state")
    assert site.connect("alice", tickets["id"], cookie="another-browser").endswith("connect_error=invalid_state")
    assert site.connect("alice", tickets["id"], tamper={"iss": "http://evil.example"}).endswith(
        "connect_error=issuer_mismatch"
    )
    assert site.connections("alice")["tickets"]["status"] == "not_connected"


@pytest.mark.database_agnostic  # access rules: plain ORM
def test_someone_who_may_not_use_the_expert_gets_a_404(site, tickets):
    answer = httpx2.post(f"{site.url}/connections/{tickets['id']}", json={}, headers=site.auth("carol"), timeout=10)
    assert answer.status_code == 404
    assert "tickets" not in site.connections("carol")


@pytest.mark.database_agnostic  # the OAuth dance and a call: the wire
def test_connect_call_disconnect(site, tickets):
    conversation = site.conversation()
    assert site.connect("alice", tickets["id"]) == f"/console/?connected={tickets['id']}"
    mine = site.connections("alice")["tickets"]
    assert mine["status"] == "connected" and mine["scopes"] == ["tickets:read"] and mine["expires_at"]
    listed = httpx2.get(
        f"{site.url}/config/workspace/{site.workspace_id}/experts/{tickets['id']}",
        headers=site.auth("alice"),
        timeout=10,
    ).json()["expert"]
    assert listed["status"] == "ok"  # the tools are listed with the first connected account
    assert {tool["name"] for tool in listed["tools"]} == {"whoami", "tickets", "write_ticket"}
    with site.stream("alice") as stream:
        turn_id = site.post("alice", conversation, "/tickets whoami {}")
        events = until_end(stream, turn_id)
    assert events[-1]["type"] == "assistant.completed", events
    [result] = [event for event in events if event["type"] == "tool.result"]
    assert result["data"]["result"]["content"] == "alice"  # alice's own account at the server

    before = stats(site.as_url)["counts"].get("revocations", 0)
    live = stats(site.as_url)["live_refresh_tokens"]
    gone = httpx2.delete(f"{site.url}/connections/{tickets['id']}", headers=site.auth("alice"), timeout=30)
    assert gone.status_code == 204
    after = stats(site.as_url)
    assert after["counts"]["revocations"] >= before + 1
    assert after["live_refresh_tokens"] == live - 1
    assert site.connections("alice")["tickets"]["status"] == "not_connected"


# -- turns that need the account --------------------------------------------------------------


@pytest.mark.database_agnostic  # the OAuth dance in a turn: the wire
def test_turn_asks_to_connect_and_goes_on_once_connected(site, tickets):
    conversation = site.conversation()
    with site.stream("bob") as stream:
        turn_id = site.post("bob", conversation, "/tickets whoami {}")
        asked = until_end(stream, turn_id)
        question = asked[-1]
        assert question["type"] == "question.asked", asked
        connect = question["data"]["connect"]
        assert connect == {"expert_id": tickets["id"], "expert": "tickets", "scopes": ["tickets:read"]}
        [item] = [
            i
            for i in httpx2.get(f"{site.url}/inbox", headers=site.auth("bob")).json()["items"]
            if i["id"] == question["data"]["request_id"]
        ]
        assert item["kind"] == "question"
        assert site.connect("bob", tickets["id"]).endswith(f"connected={tickets['id']}")  # "another device"
        rest = until_end(stream, turn_id)
    sequence = [event["type"] for event in asked + rest]
    print("\n".join(f"{e['type']} {e['data']}" for e in asked + rest))  # the closing note's sequence (-s)
    assert sequence == [
        "assistant.started",
        "tool.call",
        "question.asked",
        "question.answered",
        "tool.result",
        "assistant.completed",
    ], sequence
    assert rest[0]["data"]["action"] == "accept"
    assert rest[1]["data"]["result"]["content"] == "bob"


@pytest.mark.database_agnostic  # the OAuth dance in a turn: the wire
def test_declining_to_connect_gives_the_model_not_connected(site, tickets):
    conversation = site.conversation()
    with site.stream("alice") as stream:
        turn_id = site.post("alice", conversation, "/tickets whoami {}")
        question = until_end(stream, turn_id)[-1]
        assert question["type"] == "question.asked"
        answered = httpx2.post(
            f"{site.url}/inbox/{question['data']['request_id']}/answer",
            json={"action": "decline"},
            headers=site.auth("alice"),
            timeout=10,
        )
        assert answered.status_code == 200, answered.text
        rest = until_end(stream, turn_id)
    [result] = [event for event in rest if event["type"] == "tool.result"]
    assert result["data"]["error"]["code"] == "not_connected"


@pytest.mark.database_agnostic  # scopes: the wire
def test_step_up_asks_for_the_missing_scope_and_keeps_the_granted_ones(site):
    registered = site.register("writer", "header/dcr")
    assert registered.status_code == 201, registered.text
    expert = registered.json()["expert"]
    assert site.connect("alice", expert["id"]).endswith(f"connected={expert['id']}")
    conversation = site.conversation()
    with site.stream("alice") as stream:
        turn_id = site.post("alice", conversation, '/writer write_ticket {"title": "new printer"}')
        question = until_end(stream, turn_id)[-1]
        assert question["type"] == "question.asked", question
        assert question["data"]["connect"]["scopes"] == ["tickets:read", "tickets:write"]
        site.connect("alice", expert["id"])
        rest = until_end(stream, turn_id)
    [result] = [event for event in rest if event["type"] == "tool.result"]
    assert result["data"]["result"]["content"] == "ticket opened by alice: new printer"
    assert site.connections("alice")["writer"]["scopes"] == ["tickets:read", "tickets:write"]


# -- refresh, exactly once --------------------------------------------------------------------


def test_twenty_turns_across_two_cores_and_two_workers_refresh_once(site):
    """One user, 20 turns at once (inputs to both core processes, turns on both workers), all
    starting with an expired token: one refresh request at the server, and the grant lives."""
    registered = site.register("busy", "header/dcr")
    assert registered.status_code == 201, registered.text
    expert = registered.json()["expert"]
    assert site.connect("alice", expert["id"]).endswith(f"connected={expert['id']}")
    # Expired everywhere: at the server, and as the core knows it.
    httpx2.post(f"{site.as_url}/test/expire", timeout=10)
    _expire_in_core(site, expert["id"])
    before = stats(site.as_url)
    conversations = [site.conversation() for _ in range(20)]
    with site.stream("alice") as stream:
        turn_ids = {
            site.post("alice", conversation, "/busy whoami {}", core=n % 2)
            for n, conversation in enumerate(conversations)
        }
        results: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(results) < len(turn_ids) and time.monotonic() < deadline:
            _, event = stream.event(timeout=deadline - time.monotonic())
            turn_id = event.get("data", {}).get("turn_id")
            if turn_id in turn_ids and event["type"] in (*TERMINAL, "question.asked"):
                results[turn_id] = event
    assert len(results) == 20, f"{len(results)} of 20 turns ended"
    assert {event["type"] for event in results.values()} == {"assistant.completed"}, [
        (event["type"], event["data"].get("error")) for event in results.values()
    ]
    assert {event["data"]["content"] for event in results.values()} == {"alice"}
    after = stats(site.as_url)
    refreshes = after["counts"].get("refresh_token", 0) - before["counts"].get("refresh_token", 0)
    refused = after["counts"].get("refresh_token_refused", 0) - before["counts"].get("refresh_token_refused", 0)
    print(f"refresh requests at the server for 20 turns, 2 cores, 2 workers: {refreshes} (refused: {refused})")
    assert (refreshes, refused) == (1, 0)
    assert after["live_refresh_tokens"] >= 1  # the grant was not revoked (no reuse was detected)
    assert site.connections("alice")["busy"]["status"] == "connected"


@pytest.mark.database_agnostic  # a refused refresh: the wire; one process
def test_a_refused_refresh_marks_the_connection_and_asks_to_connect_again(site):
    registered = site.register("revoked", "header/dcr")
    expert = registered.json()["expert"]
    assert site.connect("alice", expert["id"]).endswith(f"connected={expert['id']}")
    httpx2.post(f"{site.as_url}/test/revoke", params={"user": "alice"}, timeout=10)  # revoked at the server
    httpx2.post(f"{site.as_url}/test/expire", timeout=10)
    # The expert remembers an introspection for a second (tests/oauth_expert.py), and connecting
    # just listed its tools with this token: past that, the expert asks the server again.
    time.sleep(1.5)
    conversation = site.conversation()
    with site.stream("alice") as stream:
        turn_id = site.post("alice", conversation, "/revoked whoami {}")
        question = until_end(stream, turn_id)[-1]
    assert question["type"] == "question.asked", question
    assert question["data"]["message"].startswith("Connect your account again")
    assert site.connections("alice")["revoked"]["status"] == "needs_reconsent"
    assert site.connect("alice", expert["id"]).endswith(f"connected={expert['id']}")
    assert site.connections("alice")["revoked"]["status"] == "connected"


# -- erasure ----------------------------------------------------------------------------------


@pytest.mark.database_agnostic  # revocation at the authorization server: the wire
def test_deleting_the_expert_and_erasing_the_account_revoke(site):
    registered = site.register("erased", "header/dcr")
    expert = registered.json()["expert"]
    assert site.connect("bob", expert["id"]).endswith(f"connected={expert['id']}")
    live = stats(site.as_url, "bob")["live_refresh_tokens"]
    assert live >= 1
    erased = httpx2.request(
        "DELETE", f"{site.url}/account", json={"password": PASSWORD}, headers=site.auth("bob"), timeout=30
    )
    assert erased.status_code == 204, erased.text
    deadline = time.monotonic() + 20
    while stats(site.as_url, "bob")["live_refresh_tokens"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats(site.as_url, "bob")["live_refresh_tokens"] == 0

    site.connect("alice", expert["id"])
    assert stats(site.as_url)["live_refresh_tokens"] >= 1
    revoked_before = stats(site.as_url)["counts"]["revocations"]
    gone = httpx2.delete(
        f"{site.url}/config/workspace/{site.workspace_id}/experts/{expert['id']}",
        headers=site.auth("alice"),
        timeout=30,
    )
    assert gone.status_code == 204
    assert stats(site.as_url)["counts"]["revocations"] > revoked_before
