"""`POST /input`'s lean path (`InputApi.lean`) answers exactly as DRF's path does.

Every request below is sent twice, with the lean path on and off (`INPUT_LEAN_PATH`), each time
by a fresh user to a fresh conversation: the status, the headers, and the body (ids and times
aside) must be the same, and so must what was stored. The bodies are the edges where a msgspec
decoder and `json.loads` + `InputSerializer` could differ; the lean path must either accept with
the same values or leave the request to DRF.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from common.web.throttles import GcraScopedRateThrottle
from conftest import client_for
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from workspaces import views
from workspaces.models import IdempotencyRecord, Message

pytestmark = pytest.mark.django_db

CONVERSATION = "{conversation}"  # replaced by the fresh conversation's id
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)")

DEEP: Any = "x"
for _ in range(40):
    DEEP = {"d": DEEP}
VERY_DEEP = b'{"content": "hi", "metadata": ' + b'{"d": ' * 3000 + b"1" + b"}" * 3000 + b"}"

# (name, raw body, extra request headers)
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("plain", b'{"content": "hello"}', {}),
    ("in a conversation", b'{"content": "hi", "conversation_id": "' + CONVERSATION.encode() + b'"}', {}),
    ("metadata", b'{"content": "hi", "metadata": {"a": [1, 2.5, null, true], "b": {"c": "d"}}}', {}),
    ("metadata big int", b'{"content": "hi", "metadata": {"n": 123456789012345678901234567890}}', {}),
    ("metadata 1e400", b'{"content": "hi", "metadata": {"f": 1e400}}', {}),
    ("metadata NaN", b'{"content": "hi", "metadata": {"f": NaN}}', {}),
    ("metadata null", b'{"content": "hi", "metadata": null}', {}),
    ("metadata list", b'{"content": "hi", "metadata": [1]}', {}),
    ("metadata too deep", json.dumps({"content": "hi", "metadata": DEEP}).encode(), {}),
    ("metadata 3000 deep", VERY_DEEP, {}),
    ("metadata too large", json.dumps({"content": "hi", "metadata": {"x": "y" * 20_000}}).encode(), {}),
    ("metadata NUL", b'{"content": "hi", "metadata": {"k": "a\\u0000b"}}', {}),
    ("metadata NUL key", b'{"content": "hi", "metadata": {"a\\u0000": 1}}', {}),
    ("duplicate keys", b'{"content": "first", "content": "second"}', {}),
    ("unknown field", b'{"content": "hi", "extra": 1}', {}),
    ("unknown field with NUL", b'{"content": "hi", "extra": "\\u0000"}', {}),
    ("unicode", '{"content": "héllo ✓ 𝄞 \u2028"}'.encode(), {}),
    ("escaped unicode", b'{"content": "\\u00e9\\ud834\\udd1e"}', {}),
    ("unpaired surrogate", b'{"content": "a\\ud800b"}', {}),
    ("invalid UTF-8", b'{"content": "a\xed\xa0\x80b"}', {}),
    ("latin-1 bytes", b'{"content": "caf\xe9"}', {}),
    ("NUL", b'{"content": "a\\u0000b"}', {}),
    ("blank", b'{"content": ""}', {}),
    ("whitespace", b'{"content": " \\n\\t "}', {}),
    ("leading whitespace kept", b'{"content": "  padded  "}', {}),
    ("too long", json.dumps({"content": "x" * 40_000}).encode(), {}),
    ("at the limit", json.dumps({"content": "x" * 32_768}).encode(), {}),
    ("content number", b'{"content": 5}', {}),
    ("content null", b'{"content": null}', {}),
    ("content missing", b'{"metadata": {}}', {}),
    ("conversation null", b'{"content": "hi", "conversation_id": null}', {}),
    ("conversation unknown", b'{"content": "hi", "conversation_id": "' + str(uuid.uuid4()).encode() + b'"}', {}),
    ("conversation 32 hex", b'{"content": "hi", "conversation_id": "' + uuid.uuid4().hex.encode() + b'"}', {}),
    ("conversation upper", b'{"content": "hi", "conversation_id": "' + CONVERSATION.upper().encode() + b'"}', {}),
    ("conversation braces", b'{"content": "hi", "conversation_id": "{' + CONVERSATION.encode() + b'}"}', {}),
    ("conversation int", b'{"content": "hi", "conversation_id": 5}', {}),
    ("conversation bad", b'{"content": "hi", "conversation_id": "nope"}', {}),
    ("array", b'[{"content": "hi"}]', {}),
    ("not JSON", b"content=hi", {}),
    ("empty", b"", {}),
    ("BOM", b'\xef\xbb\xbf{"content": "hi"}', {}),
    ("trailing garbage", b'{"content": "hi"} x', {}),
    ("charset utf-8", b'{"content": "hi"}', {"CONTENT_TYPE": "application/json; charset=utf-8"}),
    ("charset latin-1", b'{"content": "caf\xe9"}', {"CONTENT_TYPE": "application/json; charset=latin-1"}),
    ("form", b"content=hi", {"CONTENT_TYPE": "application/x-www-form-urlencoded"}),
    ("accept json", b'{"content": "hi"}', {"HTTP_ACCEPT": "application/json"}),
    ("accept any", b'{"content": "hi"}', {"HTTP_ACCEPT": "*/*"}),
    ("accept indent", b'{"content": "hi"}', {"HTTP_ACCEPT": "application/json; indent=4"}),
    ("accept html", b'{"content": "hi"}', {"HTTP_ACCEPT": "text/html"}),
    ("format query", b'{"content": "hi"}', {"QUERY_STRING": "format=json"}),
    ("key", b'{"content": "hi"}', {"HTTP_IDEMPOTENCY_KEY": "k-1"}),
    ("key empty", b'{"content": "hi"}', {"HTTP_IDEMPOTENCY_KEY": ""}),
    ("key too long", b'{"content": "hi"}', {"HTTP_IDEMPOTENCY_KEY": "k" * 256}),
    ("no token", b'{"content": "hi"}', {"HTTP_AUTHORIZATION": ""}),
    ("bad token", b'{"content": "hi"}', {"HTTP_AUTHORIZATION": "Bearer not-a-token"}),
    ("basic auth", b'{"content": "hi"}', {"HTTP_AUTHORIZATION": "Basic YTpi"}),
]


def _normal(value: Any) -> Any:
    """A response body with its generated ids and times replaced."""
    text = json.dumps(value, sort_keys=True)
    return json.loads(TIMESTAMP.sub("<time>", UUID_TEXT.sub("<id>", text)))


def _send(body: bytes, headers: dict[str, str], *, lean: bool, settings) -> tuple[Any, ...]:
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": lean}
    user = UserFactory()
    conversation = ConversationFactory(workspace=WorkspaceFactory(owner=user), topic="t")
    client = client_for(user)
    extra = {key: value.replace(CONVERSATION, str(conversation.id)) for key, value in headers.items()}
    if extra.get("HTTP_AUTHORIZATION") == "":
        client.credentials()
        extra.pop("HTTP_AUTHORIZATION")
    content_type = extra.pop("CONTENT_TYPE", "application/json")
    raw = body.replace(CONVERSATION.encode(), str(conversation.id).encode())
    raw = raw.replace(CONVERSATION.upper().encode(), str(conversation.id).upper().encode())
    response = client.generic("POST", "/input", raw, content_type=content_type, **extra)
    headers_out = {name: value for name, value in response.items() if name.lower() != "content-length"}
    try:
        body_out = _normal(response.json())
    except ValueError:
        body_out = response.content
    stored = list(
        Message.objects.filter(sender=user).values_list("content", "metadata", "conversation_id").order_by("created_at")
    )
    stored = [(c, m, cid == conversation.id if cid else None) for c, m, cid in stored]
    keys = IdempotencyRecord.objects.filter(user=user).count()
    return response.status_code, headers_out, body_out, stored, keys


@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[case[0] for case in CASES])
def test_the_lean_path_answers_and_stores_as_drfs_path(name, body, headers, settings):
    drf = _send(body, headers, lean=False, settings=settings)
    lean = _send(body, headers, lean=True, settings=settings)
    assert lean == drf


def test_a_retry_with_the_same_key_answers_the_first_response_on_either_path(settings):
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": True}
    user = UserFactory()
    client = client_for(user)
    first = client.post("/input", {"content": "once"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": False}
    again = client.post("/input", {"content": "once"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": True}
    third = client.post("/input", {"content": "once"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    conflict = client.post("/input", {"content": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert first.status_code == again.status_code == third.status_code == 200
    assert first.json() == again.json() == third.json()
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    assert Message.objects.filter(sender=user).count() == 1


def test_the_common_input_skips_drfs_serializer(settings, monkeypatch):
    """The lean path really serves the common request: DRF's validation is not run for it."""
    calls: list[Any] = []
    real = views.validated
    monkeypatch.setattr(views, "validated", lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": True}
    client = client_for(UserFactory())
    assert client.post("/input", {"content": "lean"}, format="json").status_code == 200
    assert calls == []
    assert client.post("/input", {"content": ""}, format="json").status_code == 400  # DRF's answer
    assert len(calls) == 1
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": False}
    assert client.post("/input", {"content": "drf"}, format="json").status_code == 200
    assert len(calls) == 2


def test_a_throttled_input_is_refused_alike_and_counted_once(settings, monkeypatch):
    """The lean path counts an accepted input once, and a refusal (DRF's answer) counts nothing."""
    monkeypatch.setitem(GcraScopedRateThrottle.THROTTLE_RATES, "input", "3/min")
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": True}
    client = client_for(UserFactory())
    statuses = [client.post("/input", {"content": f"n{n}"}, format="json").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = client.post("/input", {"content": "again"}, format="json")
    assert refused.json()["error"]["code"] == "throttled" and int(refused["Retry-After"]) >= 1
