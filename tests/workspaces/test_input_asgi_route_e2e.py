"""`POST /input` served from the ASGI scope (`common.web.asgi.LeanRoutes`) answers exactly as
Django's handler does, seen from outside.

Two real core processes (uvicorn, production settings) share one database: one with the ASGI
route (`INPUT_ASGI_ROUTE=1`, the default), one without (`INPUT_ASGI_ROUTE=0`: Channels' router,
Django's handler and middleware, then the same view). Every request of the table is sent to both,
each side with its own users (the same names), and must get the same status, headers (the date
aside) and body (generated ids and times aside); what was stored and the metrics must match too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from tests.servers import core_server, create_users, fresh_database, manage, running_together, server_env

# Run in the SQLite pass only: two HTTP routes answering alike: the same writer and rows behind both.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

PASSWORD = "route-test-password"
METRICS = "route-test-metrics-token-0123456789"
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)")
NAMES = ["u0", "u1", "u2", "u3", "throttled", "owner", "inactive", "changed", "keyed"]
SIDES = ("django", "asgi")
LIMIT = 64 * 1024


@dataclass
class Side:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    conversations: dict[str, str] = field(default_factory=dict)


def _email(side: str, name: str) -> str:
    return f"{name}.{side}@example.com"


@pytest.fixture(scope="module")
def sides() -> Iterator[dict[str, Side]]:
    with fresh_database() as db_env:
        env = server_env(
            **db_env,
            LOG_LEVEL="WARNING",
            MEMORY_DRAIN_ON_COMMIT="0",
            AUTH_USER_CACHE_SECONDS="0",  # deactivation and password changes seen at once
            INPUT_RATE="30/min",
            MAX_REQUEST_BYTES=str(LIMIT),
            CORTEX_METRICS_TOKEN=METRICS,
        )
        emails = [_email(side, name) for side in SIDES for name in NAMES]
        django_core = core_server(env={**env, "INPUT_ASGI_ROUTE": "0"})
        asgi_core = core_server(env={**env, "INPUT_ASGI_ROUTE": "1"})
        with running_together(
            django_core, asgi_core, meanwhile=lambda: create_users(*emails, password=PASSWORD, env=env)
        ):
            result = {"django": Side(django_core.url), "asgi": Side(asgi_core.url)}
            for side, site in result.items():
                with httpx2.Client(base_url=site.url, timeout=30) as http:
                    for name in NAMES:
                        login = http.post("/auth/login", json={"email": _email(side, name), "password": PASSWORD})
                        assert login.status_code == 200, login.text
                        site.tokens[name] = login.json()["access_token"]
                        auth = {"Authorization": f"Bearer {site.tokens[name]}"}
                        workspace = http.post("/config/workspace", json={"name": "w"}, headers=auth).json()
                        conversation = http.post(
                            "/config/conversation",
                            json={"workspace_id": workspace["workspace"]["id"], "topic": "t"},
                            headers=auth,
                        ).json()
                        site.conversations[name] = conversation["conversation"]["id"]
            # Revocation: one user deactivated, one whose password changed (their tokens were issued before).
            revoke = (
                "from accounts.models import User\n"
                f"User.objects.filter(email__in={[_email(s, 'inactive') for s in SIDES]!r}).update(is_active=False)\n"
                f"for user in User.objects.filter(email__in={[_email(s, 'changed') for s in SIDES]!r}):\n"
                "    user.set_password('another-password-0123')\n"
                "    user.save()\n"
            )
            manage("shell", "-c", revoke, env=env)
            yield result


def _expired(token: str) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    access = AccessToken(token)  # the servers' signing key is the test's (the same environment)
    access.set_exp(lifetime=-timedelta(minutes=5))
    return str(access)


def _normal(text: bytes) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.loads(TIMESTAMP.sub("<time>", UUID_TEXT.sub("<id>", json.dumps(value, sort_keys=True))))


# (name, user, body (with {conversation} / {foreign}), headers ({token}: the user's, {expired}: an expired one of it))
CASES: list[tuple[str, str, Any, dict[str, str]]] = [
    ("plain", "u0", b'{"content": "hello"}', {}),
    ("in a conversation", "u0", b'{"content": "hi", "conversation_id": "{conversation}"}', {}),
    ("metadata", "u0", b'{"content": "hi", "metadata": {"a": [1, 2.5, null, true]}}', {}),
    ("unicode", "u0", '{"content": "héllo ✓ 𝄞"}'.encode(), {}),
    ("charset", "u0", b'{"content": "hi"}', {"Content-Type": "application/json; charset=utf-8"}),
    ("accept json", "u0", b'{"content": "hi"}', {"Accept": "application/json"}),
    ("chunked", "u1", [b'{"content": ', b'"in chunks"}'], {}),
    ("malformed JSON", "u1", b'{"content": ', {}),
    ("empty body", "u1", b"", {}),
    ("not an object", "u1", b'["hi"]', {}),
    ("unknown field", "u1", b'{"content": "hi", "extra": 1}', {}),
    ("content missing", "u1", b'{"metadata": {}}', {}),
    ("content number", "u1", b'{"content": 5}', {}),
    ("too long", "u2", json.dumps({"content": "x" * 40_000}).encode(), {}),
    ("NUL", "u2", b'{"content": "a\\u0000b"}', {}),
    ("over the body limit", "u2", json.dumps({"content": "x" * (LIMIT + 10)}).encode(), {}),
    ("form", "u2", b"content=hi", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("no content type", "u2", b'{"content": "hi"}', {"Content-Type": ""}),
    ("text/plain", "u2", b'{"content": "hi"}', {"Content-Type": "text/plain"}),
    ("accept html", "u3", b'{"content": "hi"}', {"Accept": "text/html"}),
    ("accept indent", "u3", b'{"content": "hi"}', {"Accept": "application/json; indent=4"}),
    ("unknown conversation", "u3", b'{"content": "hi", "conversation_id": "' + str(uuid.uuid4()).encode() + b'"}', {}),
    ("foreign conversation", "u3", b'{"content": "hi", "conversation_id": "{foreign}"}', {}),
    ("bad conversation id", "u3", b'{"content": "hi", "conversation_id": "nope"}', {}),
    ("key empty", "u3", b'{"content": "hi"}', {"Idempotency-Key": ""}),
    ("key too long", "u3", b'{"content": "hi"}', {"Idempotency-Key": "k" * 256}),
    ("key", "keyed", b'{"content": "once"}', {"Idempotency-Key": "k-1"}),
    ("key replayed", "keyed", b'{"content": "once"}', {"Idempotency-Key": "k-1"}),
    ("key reused with another body", "keyed", b'{"content": "twice"}', {"Idempotency-Key": "k-1"}),
    ("no token", "u0", b'{"content": "hi"}', {"Authorization": ""}),
    ("bad token", "u0", b'{"content": "hi"}', {"Authorization": "Bearer not-a-token"}),
    ("basic auth", "u0", b'{"content": "hi"}', {"Authorization": "Basic YTpi"}),
    ("expired token", "u0", b'{"content": "hi"}', {"Authorization": "Bearer {expired}"}),
    ("inactive user", "inactive", b'{"content": "hi"}', {}),
    ("password changed", "changed", b'{"content": "hi"}', {}),
    ("query string", "u1", b'{"content": "hi"}', {"?": "format=json"}),
]


def _send(site: Side, case: int, user: str, body: Any, headers: dict[str, str], http: httpx2.Client) -> tuple:
    token = site.tokens[user]
    out = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-Request-ID": f"input-case-{case}"}
    query = headers.get("?", "")
    for name, value in headers.items():
        if name != "?":
            out[name] = value.replace("{expired}", _expired(token) if "{expired}" in value else "")
    out = {name: value for name, value in out.items() if value != ""}

    def fill(raw: bytes) -> bytes:
        raw = raw.replace(b"{conversation}", site.conversations[user].encode())
        return raw.replace(b"{foreign}", site.conversations["owner"].encode())

    content: Any = iter([fill(part) for part in body]) if isinstance(body, list) else fill(body)
    response = http.post("/input" + (f"?{query}" if query else ""), content=content, headers=out)
    headers_out = sorted((name, value) for name, value in response.headers.items() if name not in ("date",))
    if "content-length" in response.headers:
        assert int(response.headers["content-length"]) == len(response.content)
    headers_out = [(n, v) for n, v in headers_out if n != "content-length"]
    return response.status_code, headers_out, _normal(response.content)


def test_every_request_is_answered_alike_by_the_asgi_route_and_djangos_handler(sides):
    answers: dict[str, list[tuple]] = {side: [] for side in SIDES}
    for side, site in sides.items():
        with httpx2.Client(base_url=site.url, timeout=30) as http:
            for n, (_name, user, body, headers) in enumerate(CASES):
                answers[side].append(_send(site, n, user, body, headers, http))
    for n, (name, *_rest) in enumerate(CASES):
        assert answers["asgi"][n] == answers["django"][n], name
    statuses = {name: answer[0] for (name, *_), answer in zip(CASES, answers["asgi"], strict=True)}
    # The table covers what it says: accepted, refused by the body, the auth, the conversation, the key.
    assert statuses["plain"] == statuses["chunked"] == statuses["key replayed"] == 200
    assert statuses["malformed JSON"] == statuses["content missing"] == 400 and statuses["unknown field"] == 200
    assert statuses["form"] == 415 and statuses["accept html"] == 406 and statuses["over the body limit"] == 413
    assert statuses["no token"] == statuses["expired token"] == statuses["inactive user"] == 401
    assert statuses["password changed"] == 401 and statuses["foreign conversation"] == 404
    assert statuses["key reused with another body"] == 409
    assert answers["asgi"][0][1] and ("x-request-id", "input-case-0") in answers["asgi"][0][1]

    # What was stored: the same messages, per user, on both sides.
    stored = {}
    for side, site in sides.items():
        with httpx2.Client(base_url=site.url, timeout=30) as http:
            stored[side] = {
                name: [
                    (m["content"], m.get("metadata"))
                    for m in http.get(
                        "/messages",
                        params={"conversation_id": site.conversations[name]},
                        headers={"Authorization": f"Bearer {site.tokens[name]}"},
                    ).json()["messages"]
                ]
                for name in ("u0", "u1", "keyed")
            }
    assert stored["asgi"] == stored["django"]

    # The metrics: the same requests counted under the same route and statuses.
    def input_lines(url: str) -> list[str]:
        text = httpx2.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS}"}).text
        return sorted(
            re.sub(r"\} \S+$", "}", line) + " " + line.rsplit(" ", 1)[1]
            for line in text.splitlines()
            if line.startswith("cortex_http_requests_total") and 'method="POST"' in line
        )

    assert input_lines(sides["asgi"].url) == input_lines(sides["django"].url)
    assert any('route="input",status="200"' in line for line in input_lines(sides["asgi"].url))


def test_a_throttled_user_is_refused_alike_after_the_same_count(sides):
    refused_after = {}
    answers = {}
    for side, site in sides.items():
        auth = {"Authorization": f"Bearer {site.tokens['throttled']}", "X-Request-ID": "throttled-user"}
        with httpx2.Client(base_url=site.url, timeout=30) as http:
            for count in range(1, 60):
                response = http.post("/input", json={"content": f"n{count}"}, headers=auth)
                if response.status_code == 429:
                    refused_after[side] = count
                    headers = {n: v for n, v in response.headers.items() if n not in ("date", "retry-after")}
                    assert response.headers["retry-after"].isdigit()
                    answers[side] = (headers, re.sub(r"\d+", "<n>", response.text))
                    break
                assert response.status_code == 200, response.text
    # 30/min: a burst of 30, then refused (plus what refilled meanwhile, one every 2 s)
    assert all(31 <= count <= 45 for count in refused_after.values()), refused_after
    assert answers["asgi"] == answers["django"]
