"""Issue 24 (low): the export holds the account's inbox requests with their answers and its linked
identities (no secret: no token, no code, no key). Read in process up to those lines (the rest of
the export, with the memory service: test_e2e.py)."""

from __future__ import annotations

import json

import pytest

from account_data.export import export_chunks
from accounts.models import ExternalIdentity
from tests.turns.test_inbox_api import answer, waiting  # noqa: F401 - the fixture: a turn paused on an approval
from turns.inbox.models import InboxRequest

pytestmark = pytest.mark.django_db(transaction=True)


async def _lines_until(user, kind: str) -> list[dict]:
    """The export's records up to and including the chunk of `kind` (the memory service after it is
    never asked)."""
    lines: list[dict] = []
    chunks = export_chunks(user)
    async for chunk in chunks:
        lines += [json.loads(line) for line in chunk.decode().splitlines()]
        if any(line["type"] == kind for line in lines):
            break
    await chunks.aclose()
    return lines


def test_the_export_holds_inbox_answers_and_linked_identities_without_secrets(waiting, alice):  # noqa: F811
    from asgiref.sync import async_to_sync

    request = InboxRequest.objects.get()
    assert answer(alice, request.id, {"decision": "approve"}).status_code == 200
    ExternalIdentity.objects.create(
        user=alice, provider="corp", issuer="https://idp.example/", subject="alice-sub", email="alice@corp.example"
    )
    lines = async_to_sync(_lines_until)(alice, "inbox_request")
    [identity] = [line["data"] for line in lines if line["type"] == "identity"]
    assert identity == {
        "provider": "corp",
        "issuer": "https://idp.example/",
        "subject": "alice-sub",
        "email": "alice@corp.example",
        "created_at": identity["created_at"],
        "last_login": None,
    }
    [item] = [line["data"] for line in lines if line["type"] == "inbox_request"]
    assert (item["id"], item["kind"], item["status"], item["turn_id"]) == (
        str(request.id),
        "approval",
        "answered",
        str(waiting.id),
    )
    assert item["answer"] == {"decision": "approve"} and item["data"]["arguments"] == {"title": "milk"}
    assert item["answered_at"] and item["conversation_id"] == str(request.conversation_id)
