"""Issue 24 (low): an access token issued before a logout gets no new stream ticket and no stream
cookie; one issued after it does. (The logout ends tickets and cookies issued before it; without
this, the old access token would simply ask for new ones.)"""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from accounts.services import token_pair_issue
from streaming import services

pytestmark = pytest.mark.django_db


def ticket(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/output/ticket")


def test_an_access_token_from_before_a_logout_gets_no_new_ticket_or_cookie(alice, time_machine):
    time_machine.move_to(1_900_000_000.5, tick=False)
    before = token_pair_issue(user=alice)
    time_machine.move_to(1_900_000_002, tick=False)
    assert (
        APIClient().post("/auth/logout", {"refresh_token": before["refresh_token"]}, format="json").status_code == 204
    )
    refused = ticket(before["access_token"])
    assert refused.status_code == 401, refused.content
    assert refused.json()["error"]["code"] == "invalid_token"
    assert services.STREAM_COOKIE not in refused.cookies
    time_machine.move_to(1_900_000_003, tick=False)
    after = token_pair_issue(user=alice)
    allowed = ticket(after["access_token"])
    assert allowed.status_code == 200 and allowed.cookies[services.STREAM_COOKIE].value


def test_a_token_issued_in_the_same_second_as_the_logout_still_counts_as_after_it(alice, time_machine):
    """`iat` has whole seconds: as for streams, it counts as issued at the end of its second."""
    time_machine.move_to(1_900_000_100.2, tick=False)
    pair = token_pair_issue(user=alice)
    APIClient().post("/auth/logout", {"refresh_token": pair["refresh_token"]}, format="json")
    time_machine.move_to(1_900_000_100.6, tick=False)
    same_second = token_pair_issue(user=alice)
    assert ticket(same_second["access_token"]).status_code == 200
    assert time.time() < 1_900_000_101
