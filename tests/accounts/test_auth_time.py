"""`auth_time`: set by every sign-in (password, provider exchange, login code), copied unchanged by
every refresh; erasing an identity-only account reads it (never `iat`). End to end:
tests/account_data/test_erase_fresh_e2e.py."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from rest_framework.test import APIClient

from accounts.models import User
from tests.accounts.test_auth import assert_error, login
from tests.accounts.test_oidc import callback, configured, exchange, idp, start  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def payload(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def refreshed(api, pair: dict) -> dict:
    response = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_every_sign_in_sets_auth_time_and_a_refresh_copies_it_unchanged(api, alice, idp, time_machine):  # noqa: F811
    time_machine.move_to(1_900_000_000, tick=False)
    browser = APIClient()
    code = parse_qs(urlsplit(callback(browser, start(browser))["Location"]).query)["login_code"][0]
    pairs = {
        "password": login(api).json(),
        "exchange": exchange(api, idp.mint(iat=1_900_000_000, exp=1_900_000_300)).json(),
        "login code": browser.post("/auth/login-code", {"login_code": code}, format="json").json(),
    }
    for how, pair in pairs.items():
        assert payload(pair["access_token"])["auth_time"] == 1_900_000_000, how
        assert payload(pair["refresh_token"])["auth_time"] == 1_900_000_000, how
    time_machine.move_to(1_900_000_600, tick=False)
    for how, pair in pairs.items():
        again = refreshed(api, refreshed(api, pair))
        access = payload(again["access_token"])
        assert (access["iat"], access["auth_time"]) == (1_900_000_600, 1_900_000_000), how


def _identity_only(api, idp) -> dict:  # noqa: F811
    pair = exchange(api, idp.mint()).json()
    assert not User.objects.get(email="user-1@example.com").has_usable_password()
    return pair


def erase(api, token: str, body: dict):
    return api.delete("/account", body, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_erasure_without_a_password_refuses_a_refreshed_token_401_and_takes_a_fresh_sign_in(api, idp, time_machine):  # noqa: F811
    pair = _identity_only(api, idp)
    time_machine.move_to(time.time() + 301, tick=False)
    stale = refreshed(api, pair)  # a new `iat`, the old `auth_time`
    refused = erase(api, stale["access_token"], {"confirm": "user-1@example.com"})
    assert_error(refused, 401, "invalid_token")
    assert "Sign in again" in refused.json()["error"]["message"]
    assert User.objects.filter(email="user-1@example.com").exists()
    fresh = exchange(api, idp.mint()).json()
    assert erase(api, fresh["access_token"], {"confirm": "user-1@example.com"}).status_code == 204
    assert not User.objects.filter(email="user-1@example.com").exists()


def test_a_refresh_token_from_before_auth_time_never_counts_as_fresh(api, idp):  # noqa: F811
    from accounts.services import token_pair_refresh
    from accounts.tokens import FamilyRefreshToken

    pair = _identity_only(api, idp)
    old = FamilyRefreshToken(pair["refresh_token"])  # type: ignore[arg-type]
    del old.payload["auth_time"]  # as a token issued before the claim existed
    upgraded = token_pair_refresh(refresh_token=str(old))
    assert payload(upgraded["access_token"])["auth_time"] == 0
    assert_error(erase(api, upgraded["access_token"], {"confirm": "user-1@example.com"}), 401, "invalid_token")
