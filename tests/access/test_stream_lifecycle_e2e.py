"""Streams that end and streams that are bounded, against real daphne processes (issue 8):
deactivation and deletion, token expiry, removed participants, the per-user cap, the replay
bound and a reader that stops reading."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed

from tests.servers import core_server, create_users, fresh_database, manage, on_database, running, server_env
from tests.streaming.clients import SSEStream, login, websocket, ws_event

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
ENV = {
    "SSE_HEARTBEAT_SECONDS": "1",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "LOG_LEVEL": "WARNING",
    "INPUT_RATE": "100000/min",
    "STREAM_RECHECK_SECONDS": "2",
    "STREAMS_PER_USER": "3",
    "REPLAY_LIMIT_EVENTS": "5",
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Site:
    env: dict[str, str]
    url: str

    def token(self, who: str) -> str:
        return login(self.url, f"{who}@example.com", PASSWORD)

    def post(self, token: str, content: str, conversation_id: str | None = None, url: str | None = None) -> dict:
        response = httpx2.post(
            f"{url or self.url}/input",
            json={"content": content, "conversation_id": conversation_id},
            headers=auth(token),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def user_id(self, token: str) -> str:
        return httpx2.get(f"{self.url}/auth/verify", headers=auth(token), timeout=10).json()["user_id"]

    def conversation(self, owner_token: str, *participant_tokens: str) -> str:
        workspace = httpx2.post(
            f"{self.url}/config/workspace", json={"name": "W"}, headers=auth(owner_token), timeout=10
        )
        conversation = httpx2.post(
            f"{self.url}/config/conversation",
            json={
                "workspace_id": workspace.json()["workspace"]["id"],
                "topic": "T",
                "participant_ids": [self.user_id(token) for token in participant_tokens],
            },
            headers=auth(owner_token),
            timeout=10,
        )
        assert conversation.status_code == 201, conversation.text
        return conversation.json()["conversation"]["id"]

    def shell(self, code: str) -> None:
        manage("shell", "-c", code, env=self.env)

    def set_active(self, email: str, active: bool) -> None:
        """One UPDATE from this process (no model signal, as from any other process)."""

        def update() -> None:
            from accounts.models import User

            User.objects.filter(email=email).update(is_active=active)

        on_database(self.env, update)


USERS = [f"{name}@example.com" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with fresh_database() as db_env:
        env = server_env(**db_env, **ENV)
        create_users(*USERS, password=PASSWORD, env=env)
        with running(core_server(env=env, server="daphne")) as server:
            yield Site(env, server.url)


def read_until_end(stream: SSEStream, timeout: float) -> tuple[list[dict], float]:
    """Events until the stream ends; returns them and when the end came (monotonic)."""
    events: list[dict] = []
    try:
        while True:
            events.append(stream.event(timeout=timeout)[1])
    except EOFError:
        return events, time.monotonic()


def test_deactivation_ends_sse_and_websocket_streams_and_they_receive_nothing_more(site: Site):
    alice, bob = site.token("alice"), site.token("bob")
    conversation = site.conversation(alice, bob)
    with SSEStream(site.url, token=bob) as stream:
        connection = websocket(site.url, token=bob)
        site.post(alice, "before", conversation)
        assert stream.event()[1]["data"]["content"] == "before"
        assert ws_event(connection)["data"]["content"] == "before"
        # Another process deactivates bob (as the test's own, a shell or a second core would): no
        # channel-layer message reaches this server, the stream's periodic re-check must.
        started = time.monotonic()
        site.set_active("bob@example.com", False)
        site.post(alice, "after", conversation)
        events, ended = read_until_end(stream, timeout=30)
        assert ended - started < 30
        assert events == [{"type": "end", "reason": "revoked"}], "nothing after the deactivation, then the end"
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(connection.recv(timeout=30)))
        assert frames == [{"type": "end", "reason": "revoked"}]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # The normal path: alice's own stream is untouched, and bob can no longer open one.
    with SSEStream(site.url, token=alice, headers={"Last-Event-ID": "0"}) as stream:
        assert [stream.event()[1]["data"]["content"] for _ in range(2)] == ["before", "after"]
    assert httpx2.get(f"{site.url}/output/stream", headers=auth(bob), timeout=10).status_code == 401
    site.set_active("bob@example.com", True)


def test_deleting_a_user_ends_their_stream(site: Site):
    heidi = site.token("heidi")
    connection = websocket(site.url, token=heidi)
    site.post(heidi, "mine")
    assert ws_event(connection)["data"]["content"] == "mine"
    started = time.monotonic()
    site.shell("from accounts.models import User; User.objects.get(email='heidi@example.com').delete()")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            connection.recv(timeout=30)
    assert time.monotonic() - started < 30
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.database_agnostic  # one process's writes: in-process fan-out tests
def test_a_removed_participant_gets_the_conversation_neither_live_nor_replayed(site: Site):
    carol, dave = site.token("carol"), site.token("dave")
    conversation = site.conversation(carol, dave)
    site.post(carol, "while dave takes part", conversation)
    with SSEStream(site.url, token=dave) as stream:
        removed = httpx2.patch(
            f"{site.url}/config/conversation/{conversation}",
            json={"participant_ids": []},
            headers=auth(carol),
            timeout=10,
        )
        assert removed.status_code == 200, removed.text
        site.post(carol, "after dave left", conversation)
        site.post(dave, "dave alone")
        assert stream.event()[1]["data"]["content"] == "dave alone"  # not "after dave left"
    with SSEStream(site.url, token=dave, headers={"Last-Event-ID": "0"}) as replay:
        assert replay.event()[1]["data"]["content"] == "dave alone"  # the conversation's events are gone
    # The owner still has everything.
    with SSEStream(site.url, token=carol, headers={"Last-Event-ID": "0"}) as replay:
        assert [replay.event()[1]["data"]["content"] for _ in range(2)] == ["while dave takes part", "after dave left"]


@pytest.mark.database_agnostic  # counted in the cache, before the database
def test_open_streams_per_user_are_capped_with_429_before_the_stream_starts(site: Site):
    erin = site.token("erin")
    streams = [SSEStream(site.url, token=erin) for _ in range(2)]
    connection = websocket(site.url, token=erin)  # the third: SSE and WebSocket count together
    try:
        refused = httpx2.get(f"{site.url}/output/stream", headers=auth(erin), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert int(refused.headers["Retry-After"]) > 0
        refused_ws = websocket(site.url, token=erin)
        assert json.loads(refused_ws.recv(timeout=10))["error"]["code"] == "too_many_streams"
        with pytest.raises(ConnectionClosed) as closed:
            refused_ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        streams.pop().close()
    # A slot is free again: the next stream opens and works.
    deadline = time.monotonic() + 30
    while True:
        with SSEStream(site.url, token=erin) as stream:
            if stream.response.status_code == 200:
                site.post(erin, "fits")
                assert stream.event()[1]["data"]["content"] == "fits"
                break
        assert time.monotonic() < deadline, "the closed stream's slot was not released"
        time.sleep(0.2)
    for stream in streams:
        stream.close()
    connection.close()


@pytest.mark.database_agnostic  # the bound is arithmetic on the cursor: in-process tests
def test_a_resume_further_back_than_the_replay_limit_gets_reset_and_starts_at_the_head(site: Site):
    frank = site.token("frank")
    posted = [site.post(frank, f"n{n}") for n in range(8)]
    with SSEStream(site.url, token=frank, headers={"Last-Event-ID": "1"}) as stream:
        event_id, event = stream.event()
        assert (event_id, event) == ("8", {"id": "8", "type": "reset"})
        site.post(frank, "live")
        assert stream.event()[1]["data"]["content"] == "live"
    # Within the limit the replay is exact.
    with SSEStream(site.url, token=frank, headers={"Last-Event-ID": "5"}) as stream:
        assert [stream.event()[1]["data"]["content"] for _ in range(4)] == ["n5", "n6", "n7", "live"]
    assert len(posted) == 8


@pytest.mark.database_agnostic  # the token's expiry: nothing the database decides
def test_a_stream_ends_when_its_access_token_expires_then_resumes_without_loss():
    # 8 s: the token must outlive the sign-in, two streams, a WebSocket and a post on a loaded machine.
    env_overrides = {**ENV, "ACCESS_TOKEN_SECONDS": "8"}
    with fresh_database() as db_env:
        env = server_env(**db_env, **env_overrides)
        create_users("grace@example.com", password=PASSWORD, env=env)
        with running(core_server(env=env, server="daphne")) as server:
            site = Site(env, server.url)
            issued = time.monotonic()  # the token's 8 s start here (its `exp` is whole seconds: -1 s at most)
            token = site.token("grace")
            ticket = httpx2.post(f"{site.url}/output/ticket", headers=auth(token), timeout=10).json()["ticket"]
            with SSEStream(site.url, token=token) as stream, SSEStream(site.url, ticket=ticket) as by_ticket:
                connection = websocket(site.url, token=token)
                data = site.post(token, "while valid")
                last_id, event = stream.event()
                assert event["data"] == data and by_ticket.event()[1]["data"] == data
                assert ws_event(connection)["data"] == data
                events, ended = read_until_end(stream, timeout=30)
                assert events == [{"type": "end", "reason": "token_expired"}]
                assert 6.9 <= ended - issued < 40  # not before it expires; the upper bound is liveness
                assert read_until_end(by_ticket, timeout=30)[0] == [{"type": "end", "reason": "token_expired"}]
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        connection.recv(timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            # Reconnect with a fresh token and the last id: nothing is lost.
            fresh = site.token("grace")
            site.post(fresh, "meanwhile")
            with SSEStream(site.url, token=fresh, headers={"Last-Event-ID": last_id}) as stream:
                assert stream.event()[1]["data"]["content"] == "meanwhile"


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.database_agnostic  # the server's buffers
def test_twenty_clients_that_never_read_cannot_grow_the_servers_memory():
    """Daphne buffers whatever is written; each non-reader is cut off at about 1 MB unsent."""
    with fresh_database() as db_env:
        env = server_env(**db_env, **{**ENV, "STREAMS_PER_USER": "25"})
        create_users("ivan@example.com", password=PASSWORD, env=env)
        with running(core_server(env=env, server="daphne")) as server:
            site = Site(env, server.url)
            token = site.token("ivan")
            sockets = []
            for _ in range(20):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client's window stays small
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(
                    f"GET /output/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
                )
                sockets.append(sock)
            with SSEStream(site.url, token=token):  # a reading client, for the normal path
                pass
            time.sleep(1)
            before = _rss_kb(server.process.pid)
            big = "z" * 30_000
            stop = threading.Event()

            statuses: list[int] = []

            def post_many() -> None:
                with httpx2.Client(base_url=site.url, headers=auth(token), timeout=30) as client:
                    for n in range(300):
                        if stop.is_set():
                            return
                        statuses.append(client.post("/input", json={"content": f"{n}:{big}"}).status_code)

            poster = threading.Thread(target=post_many)
            poster.start()
            poster.join(timeout=120)
            stop.set()
            assert statuses == [200] * 300
            after = _rss_kb(server.process.pid)
            # 300 events of 30 KB to 20 streams is 180 MB of output; unbounded, most of it would stay
            # in the server (the kernel holds a few MB per connection). Bounded: about 1 MB each.
            growth_mb = (after - before) / 1024
            print(f"RSS before {before / 1024:.1f} MB, after {after / 1024:.1f} MB, growth {growth_mb:.1f} MB")
            assert growth_mb < 60, f"server RSS grew by {growth_mb:.1f} MB"
            # Every non-reader was cut off; a reader resumes with its last id and gets everything.
            for sock in sockets:
                sock.settimeout(10)
                received = b""
                with _closed_or_reset():
                    while not received.endswith(b"0\r\n\r\n") and (chunk := sock.recv(1 << 16)):
                        received += chunk
                sock.close()
                assert received.count(b"\nid: ") < 300, "the response ended early"
            with SSEStream(site.url, token=token, headers={"Last-Event-ID": "296"}) as stream:
                assert [int(stream.event()[0]) for _ in range(4)] == list(range(297, 301))


class _closed_or_reset:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is None or issubclass(exc_type, ConnectionResetError)
