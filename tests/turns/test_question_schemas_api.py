"""An expert's schema is data (common.json_schemas): a question whose schema is unusable is refused
when asked, nothing a schema names is ever fetched, and no answer is a 500. The real processes:
test_question_schemas_e2e.py."""

from __future__ import annotations

import json

import pytest

from common.json_schemas import UnusableSchema, content_errors, schema_problem
from tests.listener import Listener
from tests.turns.test_inbox_api import answer, waiting  # noqa: F401 - the fixture, paused on a request
from turns.inbox.models import InboxRequest
from turns.inbox.services import pause_refusal


def bad_schemas(listener_url: str) -> dict[str, dict]:
    return {
        "remote ref": {"type": "object", "properties": {"a": {"$ref": f"{listener_url}/ssrf"}}},
        "file ref": {"type": "object", "properties": {"a": {"$ref": "file:///dev/zero"}}},
        "bad type": {"type": 5},
        "bad pattern": {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
        "itself": {"$ref": "#"},
        "dynamic": {"type": "object", "properties": {"a": {"$dynamicRef": f"{listener_url}/x"}}},
        "not an object": ["type", "object"],  # type: ignore[dict-item]
    }


def test_every_unusable_schema_has_a_reason_and_a_flat_one_has_none():
    for name, schema in bad_schemas("http://127.0.0.1:9").items():
        assert schema_problem(schema), name
    flat = {"type": "object", "properties": {"confirm": {"type": "boolean"}, "$ref": {"type": "string"}}}
    assert schema_problem(flat) is None  # a property named `$ref` is a name, not a reference
    assert schema_problem({"type": "object", "properties": {"a": {"const": {"$ref": "http://x/"}}}}) is None
    assert content_errors(flat, {"confirm": "yes"}) == {"confirm": ["'yes' is not of type 'boolean'"]}


def test_content_is_never_checked_against_an_unusable_schema_and_nothing_is_fetched():
    with Listener() as listener:
        for name, schema in bad_schemas(listener.url).items():
            with pytest.raises(UnusableSchema):
                content_errors(schema, {"a": "x"})  # type: ignore[arg-type]
            print(name, schema_problem(schema))
    assert listener.seen == []


def test_a_question_with_an_unusable_schema_is_refused_when_asked():
    for name, schema in bad_schemas("http://127.0.0.1:9").items():
        refusal = pause_refusal("question", {"expert": "x", "message": "Fill this in.", "schema": schema})
        assert refusal and refusal.startswith("The expert's question cannot be asked:"), name
    good = {"type": "object", "properties": {"confirm": {"type": "boolean"}}}
    assert pause_refusal("question", {"expert": "x", "message": "Sure?", "schema": good}) is None
    assert pause_refusal("question", {"expert": "x", "message": "Go", "url": "https://example.com/"}) is None


@pytest.mark.django_db
def test_an_open_question_with_an_unusable_schema_answers_400_never_500_and_fetches_nothing(waiting, alice):  # noqa: F811
    """A question stored before schemas were checked when asked: accepting it is a 400 with the
    reason, it stays open, and it can still be declined."""
    request = InboxRequest.objects.get()
    with Listener() as listener:
        for name, schema in bad_schemas(listener.url).items():
            InboxRequest.objects.filter(id=request.id).update(kind="question", data={**request.data, "schema": schema})
            response = answer(alice, request.id, {"action": "accept", "content": {"a": "x"}})
            assert response.status_code == 400, (name, response.content)
            error = response.json()["error"]
            assert error["code"] == "invalid_input" and "decline" in error["message"], name
            assert InboxRequest.objects.get().status == "open"
            print(name, json.dumps(error))
    assert listener.seen == []
    declined = answer(alice, request.id, {"action": "decline"})
    assert declined.status_code == 200 and declined.json()["item"]["answer"] == {"action": "decline"}
