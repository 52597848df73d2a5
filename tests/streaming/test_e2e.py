"""End to end against real daphne processes (what `runserver` serves, with streaming.daphne_compat):
fan-out, resume under concurrent writers, several processes sharing Redis, shutdown; uvicorn for
slow clients and as the second process."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed

from tests.servers import core_server, create_users, fresh_database, redis_server, running, running_together, server_env
from tests.streaming.clients import SSEStream, login, websocket, ws_event

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
USERS = ("alice@example.com", "bob@example.com", "charlie@example.com")
# Short heartbeats keep blocking readers' deadlines checked; no memory service runs here.
ENV = {"SSE_HEARTBEAT_SECONDS": "1", "MEMORY_DRAIN_ON_COMMIT": "0", "LOG_LEVEL": "WARNING", "INPUT_RATE": "100000/min"}


@dataclass
class Site:
    env: dict[str, str]
    url: str
    tokens: dict[str, str]
    conversation_id: str

    def post(self, who: str, content: str, conversation: bool = True, url: str | None = None) -> dict:
        body = {"content": content, "conversation_id": self.conversation_id if conversation else None}
        response = httpx2.post(
            f"{url or self.url}/input", json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]


def _site(db_env: dict[str, str], url: str) -> Site:
    tokens = {email.split("@")[0]: login(url, email, PASSWORD) for email in USERS}
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    workspace = httpx2.post(f"{url}/config/workspace", json={"name": "W"}, headers=auth, timeout=10).json()
    bob_id = httpx2.get(f"{url}/auth/verify", headers={"Authorization": f"Bearer {tokens['bob']}"}).json()["user_id"]
    conversation = httpx2.post(
        f"{url}/config/conversation",
        json={"workspace_id": workspace["workspace"]["id"], "topic": "T", "participant_ids": [bob_id]},
        headers=auth,
        timeout=10,
    ).json()
    return Site(db_env, url, tokens, conversation["conversation"]["id"])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with fresh_database() as db_env:
        env = server_env(**db_env, **ENV)
        server = core_server(env=env, server="daphne")
        with running_together(server, meanwhile=lambda: create_users(*USERS, password=PASSWORD, env=env)):
            yield _site(env, server.url)


def test_input_reaches_sse_and_websocket_clients_of_participants_only(site: Site):
    sse = {who: SSEStream(site.url, token=site.tokens[who]) for who in ("alice", "bob", "charlie")}
    ws = {who: websocket(site.url, token=site.tokens[who]) for who in ("alice", "bob", "charlie")}
    try:
        data = site.post("alice", "hello bob")
        for who in ("alice", "bob"):
            _, event = sse[who].event()
            assert event["type"] == "input" and event["data"] == data
            assert ws_event(ws[who]) == event
        site.post("charlie", "charlie alone", conversation=False)
        assert sse["charlie"].event()[1]["data"]["content"] == "charlie alone"
        assert ws_event(ws["charlie"])["data"]["content"] == "charlie alone"
    finally:
        for stream in sse.values():
            stream.close()
        for connection in ws.values():
            connection.close()


def _post_concurrently(
    site: Site, prefix: str, *, threads: int = 4, each: int = 8, url: str | None = None
) -> list[str]:
    """Inputs from several threads; alice's streams see them all (bob's always go to the conversation)."""
    posted: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(each):
            who = "alice" if (n + i) % 2 else "bob"
            data = site.post(who, f"{prefix}-{n}-{i}", conversation=who == "bob" or i % 3 != 0, url=url)
            with lock:
                posted.append(data["content"])

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return posted


def _read(stream: SSEStream, count: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(count):
        event_id, event = stream.event()
        out.append((int(event_id), event["data"]["content"]))
    return out


def test_resume_after_disconnect_gets_exactly_the_missed_events_then_live(site: Site):
    with SSEStream(site.url, token=site.tokens["alice"]) as stream:
        site.post("alice", "seen")
        last_id, event = stream.event()
        assert event["data"]["content"] == "seen"
    missed = _post_concurrently(site, "missed")
    with SSEStream(site.url, token=site.tokens["alice"], headers={"Last-Event-ID": last_id}) as stream:
        live: list[str] = []
        posting = threading.Thread(target=lambda: live.extend(_post_concurrently(site, "live")))
        posting.start()
        received = _read(stream, len(missed))
        posting.join()
        received += _read(stream, len(live))
    ids = [event_id for event_id, _ in received]
    assert ids == list(range(int(last_id) + 1, int(last_id) + 1 + len(missed) + len(live)))  # in order, no gap/dup
    contents = [content for _, content in received]
    # Everything missed committed before the stream answered, so it is replayed before any live one.
    assert sorted(contents[: len(missed)]) == sorted(missed)
    assert sorted(contents) == sorted(missed + live)


@pytest.mark.database_agnostic  # the WebSocket framing of the replay the SSE resume test runs here
def test_websocket_resume_with_last_event_id(site: Site):
    connection = websocket(site.url, token=site.tokens["bob"])
    site.post("bob", "ws one")
    last_id = ws_event(connection)["id"]
    connection.close()
    site.post("alice", "ws missed")
    connection = websocket(site.url, token=site.tokens["bob"], query=f"last_event_id={last_id}")
    try:
        event = ws_event(connection)
        assert (int(event["id"]), event["data"]["content"]) == (int(last_id) + 1, "ws missed")
        site.post("bob", "ws live")
        assert ws_event(connection)["data"]["content"] == "ws live"
    finally:
        connection.close()


@pytest.mark.database_agnostic  # refused before the database
def test_websocket_from_a_foreign_origin_is_refused(site: Site):
    with pytest.raises(Exception) as refused:
        websocket(site.url, token=site.tokens["alice"], origin="http://evil.example")
    assert "403" in str(refused.value)


@pytest.mark.database_agnostic  # refused before the database
def test_token_in_url_is_refused(site: Site):
    response = httpx2.get(f"{site.url}/output/stream", params={"access_token": site.tokens["alice"]}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_in_url"


@pytest.mark.database_agnostic  # tickets: plain ORM, in-process tests
def test_ticket_opens_a_stream_once(site: Site):
    auth = {"Authorization": f"Bearer {site.tokens['bob']}"}
    ticket = httpx2.post(f"{site.url}/output/ticket", headers=auth, timeout=10).json()["ticket"]
    with SSEStream(site.url, ticket=ticket) as stream:
        assert stream.response.status_code == 200
        site.post("bob", "via ticket", conversation=False)
        assert stream.event()[1]["data"]["content"] == "via ticket"
    again = httpx2.get(f"{site.url}/output/stream", params={"ticket": ticket}, timeout=10)
    assert again.status_code == 401


@pytest.mark.database_agnostic  # shutdown
def test_websocket_is_closed_with_1001_when_the_server_shuts_down(site: Site):
    server = core_server(env=site.env, server="daphne")
    with running(server):
        connection = websocket(server.url, token=site.tokens["alice"])
        site.post("alice", "before shutdown", url=server.url)
        assert ws_event(connection)["data"]["content"] == "before shutdown"  # the stream is live
        # An HTTP connection that just finished is what makes daphne's own shutdown hook fail
        # (see common.web.daphne_compat); ours must close the socket with 1001 regardless.
        server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


@pytest.mark.database_agnostic  # the Redis channel layer
def test_two_processes_share_events_through_redis(site: Site):
    with redis_server() as redis_url:
        env = {**site.env, "REDIS_URL": redis_url}
        with running(core_server(env=env, server="daphne")) as a, running(core_server(env=env)) as b:
            with SSEStream(b.url, token=site.tokens["alice"]) as stream:
                ws = websocket(b.url, token=site.tokens["alice"])
                data = site.post("bob", "from A", url=a.url)
                last_id, event = stream.event()
                assert event["data"] == data
                assert ws_event(ws)["data"] == data
                ws.close()
            missed = _post_concurrently(site, "on-A", threads=2, each=5, url=a.url)
            with SSEStream(b.url, token=site.tokens["alice"], headers={"Last-Event-ID": last_id}) as stream:
                replayed = _read(stream, len(missed))
                assert [i for i, _ in replayed] == list(range(int(last_id) + 1, int(last_id) + 1 + len(missed)))
                assert sorted(c for _, c in replayed) == sorted(missed)
                site.post("alice", "live from A", url=a.url)
                assert stream.event()[1]["data"]["content"] == "live from A"


@pytest.mark.database_agnostic  # a slow reader cut by the server's buffer; the replay runs in the resume test
def test_a_client_that_falls_behind_is_disconnected_and_resumes(site: Site):
    """uvicorn applies backpressure to a reader that stops reading (once the socket buffers, a few
    MB on loopback, are full); the stream's buffer then overflows and the server ends the response.
    Resuming from the last id read gets everything."""
    env = {**site.env, "STREAM_BUFFER_EVENTS": "3"}
    with running(core_server(env=env)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"GET /output/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {site.tokens['charlie']}\r\n\r\n".encode()
        )
        big = "z" * 30_000
        total = 250
        for n in range(total):
            site.post("charlie", f"{n}:{big}", conversation=False, url=server.url)
        sock.settimeout(10)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        sock.close()
        text = data.decode()
        ids = [int(line[4:]) for line in text.split("\n") if line.startswith("id: ")]
        assert data.endswith(b"0\r\n\r\n"), "the server ended the response"
        assert 0 < len(ids) < total
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        headers = {"Last-Event-ID": str(ids[-1])}
        with SSEStream(server.url, token=site.tokens["charlie"], headers=headers) as stream:
            rest = _read(stream, total - len(ids))
    assert [i for i, _ in rest] == list(range(ids[-1] + 1, ids[-1] + 1 + total - len(ids)))


@pytest.mark.database_agnostic  # refused before the database
def test_websocket_with_a_bad_token_gets_the_envelope_then_close_1008(site: Site):
    connection = websocket(site.url, token="not-a-token")
    assert json.loads(connection.recv(timeout=10))["error"]["code"] == "invalid_token"
    with pytest.raises(ConnectionClosed) as closed:
        connection.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
