"""Webhooks end to end: a real core (uvicorn), a real `manage.py webhook_worker`, receivers on
loopback (tests/webhooks/receiver.py). Each test has its own user, so its webhook sees only its own
log; events are inputs without a conversation (no turn worker needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from standardwebhooks import Webhook

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
from tests.streaming.clients import login
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
USERS = ("ordered", "flaky", "hanging", "redirected", "private", "killed", "outsider")
BACKOFF_MS = 300
TIMEOUT = 2


@dataclass
class Site:
    url: str
    tokens: dict[str, str]
    receiver: Receiver
    worker: ServerProcess
    private_port: int

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def webhook(self, who: str, path: str, events: list[str] | None = None) -> tuple[dict, str]:
        response = httpx2.post(
            f"{self.url}/webhooks",
            json={"url": f"{self.receiver.url}{path}", "events": events or ["*"], "description": who},
            headers=self.auth(who),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.receiver.secrets[path] = body["secret"]
        return body["webhook"], body["secret"]

    def post(self, who: str, content: str) -> dict:
        response = httpx2.post(f"{self.url}/input", json={"content": content}, headers=self.auth(who), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def deliveries(self, who: str, webhook_id: str) -> list[dict]:
        response = httpx2.get(f"{self.url}/webhooks/{webhook_id}/deliveries", headers=self.auth(who), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["items"]


def worker(env: dict[str, str]) -> ServerProcess:
    return manage_command("webhook_worker", env=env, port=0, ready_line="webhook worker: running")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    receiver = Receiver().start()
    private_port = free_port()
    env_extra = {
        "LOG_LEVEL": "INFO",
        "MEMORY_DRAIN_ON_COMMIT": "0",
        # The receiver's address and port; `localhost` only by name, on another port: it resolves to
        # loopback, which that entry does not list, so the socket check refuses it.
        "WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port},localhost:{private_port}",
        "WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
        "WEBHOOK_BACKOFF_BASE_MS": str(BACKOFF_MS),
        "WEBHOOK_POLL_MS": "50",
        "WEBHOOK_LEASE_EXTRA_SECONDS": "1",
        "INPUT_RATE": "100000/min",
    }
    try:
        with fresh_database() as db_env:
            env = server_env(**db_env, **env_extra)
            core = core_server(env=env)
            with running_together(
                core,
                worker(env),
                meanwhile=lambda: create_users(*(f"{who}@example.com" for who in USERS), password=PASSWORD, env=env),
            ) as (_, delivery_worker):
                tokens = {who: login(core.url, f"{who}@example.com", PASSWORD) for who in USERS}
                yield Site(core.url, tokens, receiver, delivery_worker, private_port)
    finally:
        receiver.stop()


def test_every_event_arrives_signed_in_log_order_with_its_id(site):
    webhook, secret = site.webhook("ordered", "/ok/ordered")
    sent = [site.post("ordered", f"message {n}")["data"] for n in range(10)]
    hits = lambda: site.receiver.of("/ok/ordered")  # noqa: E731
    site.receiver.wait_for(lambda: len({hit.headers["webhook-id"] for hit in hits()}) >= 10, what="10 events")
    first_seen: list[str] = []
    for hit in hits():
        assert hit.verified is True
        if hit.headers["webhook-id"] not in first_seen:
            first_seen.append(hit.headers["webhook-id"])
    assert [int(event_id) for event_id in first_seen] == sorted(int(event_id) for event_id in first_seen)
    bodies = [json.loads(hit.body) for hit in hits()]
    assert [body["data"]["content"] for body in bodies[:10]] == [data["content"] for data in sent]
    assert all(set(body) == {"type", "timestamp", "data"} and body["type"] == "input" for body in bodies)
    # The reference code, once more, by hand: the signature is over "<id>.<timestamp>.<body>".
    hit = hits()[0]
    Webhook(secret).verify(hit.body, hit.headers)
    # And by hand, as the contract words it: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{hit.headers['webhook-id']}.{hit.headers['webhook-timestamp']}.".encode() + hit.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert hit.headers["webhook-signature"] == expected
    print(f"\nOne delivery (secret {secret}):")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent"):
        print(f"{name}: {hit.headers[name]}")
    print(hit.body.decode())
    site.receiver.wait_for(
        lambda: all(item["status"] == "delivered" for item in site.deliveries("ordered", webhook["id"])),
        what="the log showing every delivery delivered",
    )
    items = site.deliveries("ordered", webhook["id"])
    assert [item["event_id"] for item in items] == [str(n) for n in range(10, 0, -1)]
    assert all(item["attempts"] == 1 and item["last_status_code"] == 204 for item in items)
    # The log is its owner's: anyone else gets the same 404 as for a missing webhook.
    other = httpx2.get(f"{site.url}/webhooks/{webhook['id']}/deliveries", headers=site.auth("outsider"))
    assert other.status_code == 404


def test_a_receiver_that_fails_three_times_gets_it_with_backoff(site):
    path = "/ok/flaky"
    site.receiver.failures_left[path] = 3
    webhook, _ = site.webhook("flaky", path)
    site.post("flaky", "try me")
    site.receiver.wait_for(lambda: len(site.receiver.of(path)) >= 4, what="4 attempts")
    hits = site.receiver.of(path)
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(hits)]
    # BASE x 2^(n-1), each with at most 20 % less jitter: never sooner than that.
    minimum = [BACKOFF_MS / 1000 * 2**n * 0.8 for n in range(3)]
    assert all(gap >= low for gap, low in zip(gaps[:3], minimum, strict=True)), (gaps, minimum)
    site.receiver.wait_for(
        lambda: site.deliveries("flaky", webhook["id"])[0]["status"] == "delivered", what="delivered"
    )
    (item,) = site.deliveries("flaky", webhook["id"])
    assert item["attempts"] == 4 and item["last_status_code"] == 204


@pytest.mark.database_agnostic  # the receiver's timeout: the wire
def test_a_hanging_receiver_times_out_and_is_retried(site):
    webhook, _ = site.webhook("hanging", "/hang")
    site.post("hanging", "are you there")
    site.receiver.wait_for(
        lambda: (site.deliveries("hanging", webhook["id"]) or [{}])[0].get("attempts", 0) >= 1, what="an attempt"
    )
    (item,) = site.deliveries("hanging", webhook["id"])
    # It gave up after WEBHOOK_TIMEOUT_SECONDS: had it waited for the receiver (which answers 204
    # after hang_seconds), the delivery would be delivered.
    assert item["status"] == "pending" and item["last_status_code"] is None
    assert "timeout" in item["last_error"]
    assert site.receiver.hang_seconds > TIMEOUT


@pytest.mark.database_agnostic  # the wire
def test_a_redirect_is_not_followed(site):
    webhook, _ = site.webhook("redirected", "/redirect")
    site.post("redirected", "go elsewhere")
    site.receiver.wait_for(lambda: site.receiver.of("/redirect"), what="the attempt")
    site.receiver.wait_for(
        lambda: (site.deliveries("redirected", webhook["id"]) or [{}])[0].get("attempts", 0) >= 1, what="recorded"
    )
    (item,) = site.deliveries("redirected", webhook["id"])
    assert item["status"] == "pending" and item["last_status_code"] == 307
    assert site.receiver.of("/target") == []


@pytest.mark.database_agnostic  # the host policy: the wire
def test_a_private_address_is_refused_at_registration_and_at_the_socket(site):
    for url in ("http://10.0.0.7/hook", "http://169.254.169.254/latest", f"http://127.0.0.1:{site.private_port}/x"):
        response = httpx2.post(
            f"{site.url}/webhooks", json={"url": url, "events": ["*"]}, headers=site.auth("private"), timeout=10
        )
        assert response.status_code == 400, url
        assert "url" in response.json()["error"]["fields"]
    # A listed name that resolves to loopback, not listed for that port: refused when connecting.
    name_only = httpx2.post(
        f"{site.url}/webhooks",
        json={"url": f"http://localhost:{site.private_port}/hook", "events": ["*"]},
        headers=site.auth("private"),
        timeout=10,
    )
    assert name_only.status_code == 201, name_only.text
    webhook_id = name_only.json()["webhook"]["id"]
    site.post("private", "to a private address")
    site.receiver.wait_for(
        lambda: (site.deliveries("private", webhook_id) or [{}])[0].get("attempts", 0) >= 1, what="an attempt"
    )
    (item,) = site.deliveries("private", webhook_id)
    assert item["status"] == "pending" and item["last_status_code"] is None
    assert "not allowed" in item["last_error"], item["last_error"]


def test_the_worker_killed_mid_delivery_loses_nothing(site):
    path = "/slow/killed"
    webhook, _ = site.webhook("killed", path)
    sent = [site.post("killed", f"event {n}")["data"]["id"] for n in range(3)]
    site.receiver.wait_for(lambda: site.receiver.of(path), what="the first request in flight")
    site.worker.kill()  # SIGKILL while the receiver still holds the first request
    site.worker.start()
    site.receiver.wait_for(
        lambda: (
            all(item["status"] == "delivered" for item in site.deliveries("killed", webhook["id"]))
            and len(site.deliveries("killed", webhook["id"])) == 3
        ),
        timeout=30,
        what="every delivery delivered after the restart",
    )
    contents = [json.loads(hit.body)["data"]["id"] for hit in site.receiver.of(path)]
    assert contents[0] == sent[0] and contents.count(sent[0]) >= 2  # the interrupted one, again
    assert list(dict.fromkeys(contents)) == sent  # then the rest, in order
