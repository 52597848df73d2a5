"""An expert's schema is data, end to end: a real core, a real turn worker, and an expert (a real
process, tests/experts/recording_expert.py `--form-asker`) that asks with whatever schema it is
given. A schema naming a listener of this test is refused when asked and the listener sees
nothing; invalid schemas are refused the same way; a flat schema is asked, accepted and answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from tests.experts.conftest import recording_expert
from tests.listener import Listener
from tests.turns.test_inbox_e2e import answer, inbox, types
from tests.turns.test_turns_e2e import (
    Site,
    first_of,
    system,  # noqa: F401 - the same stack, started for this module
    system_env,  # noqa: F401 - and its settings
    until_end,
)

# Run in the SQLite pass only: questions' schemas checked as data: validation, not the rows.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


@pytest.fixture(scope="module")
def site(system) -> Iterator[Site]:  # noqa: F811 - the fixture imported above
    site, _ = system
    with recording_expert(form_asker=True) as former:
        registered = httpx2.post(
            f"{site.url}/config/workspace/{site.workspace_id}/experts",
            json={"name": "former", "url": former.url, "auth": "none", "tool_policy": {"ask_form": "auto"}},
            headers=site.auth("alice"),
            timeout=30,
        )
        assert registered.status_code == 201 and registered.json()["expert"]["status"] == "ok", registered.text
        yield site


def ask(site: Site, conversation: str, schema: object) -> str:
    arguments = json.dumps({"schema": json.dumps(schema)})
    return site.post("alice", conversation, f"/former ask_form {arguments}")["turn_id"]


def test_a_schema_that_names_a_listener_is_refused_when_asked_and_nothing_is_fetched(site):
    conversation = site.conversation("none")
    with Listener() as listener, site.stream("alice") as laptop:
        schema = {"type": "object", "properties": {"a": {"$ref": f"{listener.url}/ssrf"}}}
        turn_id = ask(site, conversation, schema)
        events = until_end(laptop, turn_id)
        assert "question.asked" not in types(events)
        [result] = [event for _, event in events if event["type"] == "tool.result"]
        assert result["data"]["error"]["code"] == "denied"
        assert "refers to" in result["data"]["error"]["message"] and "/ssrf" in result["data"]["error"]["message"]
        assert events[-1][1]["type"] == "assistant.failed"
        assert events[-1][1]["data"]["error"]["code"] == "denied"
        assert [item for item in inbox(site, "alice") if item["turn_id"] == turn_id] == []
    assert listener.seen == []  # after the turn's end: nothing ever connected


@pytest.mark.parametrize(
    "field",
    [{"type": 5}, {"type": "string", "pattern": "("}, {"$ref": "#"}, {"$ref": "file:///dev/zero"}],
    ids=["bad-type", "bad-pattern", "refers-to-itself", "file-ref"],
)
def test_an_invalid_schema_is_refused_cleanly_when_asked(site, field):
    """Inside a property: the wire form of a question (MCP `RequestedSchema`) is an object whose
    `type` is "object"; its top level is checked by the SDKs on both ends (top-level cases:
    test_question_schemas_api.py)."""
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        turn_id = ask(site, conversation, {"type": "object", "properties": {"a": field}})
        events = until_end(laptop, turn_id)
    assert "question.asked" not in types(events)
    [result] = [event for _, event in events if event["type"] == "tool.result"]
    error = result["data"]["error"]
    print(json.dumps(error))
    assert error["code"] == "denied" and error["message"].startswith("The expert's question cannot be asked:")
    print(json.dumps(error))


def test_a_flat_schema_is_asked_and_its_answer_reaches_the_expert(site):
    conversation = site.conversation("none")
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}
    with site.stream("alice") as laptop:
        turn_id = ask(site, conversation, schema)
        _, asked = first_of(laptop, turn_id, "question.asked")
        request_id = asked["data"]["request_id"]
        bad = answer(site, "alice", request_id, {"action": "accept", "content": {"name": "X1"}})
        assert bad.status_code == 400 and "name" in bad.json()["error"]["fields"]
        good = answer(site, "alice", request_id, {"action": "accept", "content": {"name": "ada"}})
        assert good.status_code == 200, good.text
        events = until_end(laptop, turn_id)
    result = next(event for _, event in events if event["type"] == "tool.result")
    assert result["data"]["result"]["structured"] == {"action": "accept", "content": {"name": "ada"}}
