"""Erasure needs a real sign-in, end to end: a core process, the loopback OpenID provider, and an
identity-only account. A refreshed token (a new `iat`, the sign-in's old `auth_time`) cannot erase
the account: 401. ACCOUNT_ERASE_FRESH_SECONDS is 3 here so the sign-in gets old within the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import jwt
import pytest

from tests.oidc_provider import OidcProvider, providers_setting
from tests.servers import ServerProcess, core_server, fresh_database, running, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]  # the sign-in's freshness, refused before any erasure

FRESH_SECONDS = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[OidcProvider, ServerProcess]]:
    idp = OidcProvider()
    try:
        with fresh_database() as database:
            env = server_env(
                **database, OIDC_PROVIDERS=providers_setting(idp), ACCOUNT_ERASE_FRESH_SECONDS=str(FRESH_SECONDS)
            )
            with running(core_server(env=env)) as core:
                yield idp, core
    finally:
        idp.close()


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_erasure_with_a_refreshed_token_is_refused_401(stack):
    idp, core = stack
    idp.user = {"sub": "leaver-sub", "email": "leaver@example.com", "email_verified": True, "name": "Leaver"}
    signed_in = httpx2.post(f"{core.url}/auth/exchange", json={"provider": "corp", "id_token": idp.mint()}, timeout=10)
    assert signed_in.status_code == 200, signed_in.text
    pair = signed_in.json()
    auth_time = claims(pair["access_token"])["auth_time"]
    while time.time() <= auth_time + FRESH_SECONDS + 1:  # the sign-in gets old (a bound, not a race)
        time.sleep(0.2)
    refreshed = httpx2.post(f"{core.url}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10)
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    assert claims(token)["auth_time"] == auth_time and claims(token)["iat"] > auth_time + FRESH_SECONDS
    erased = httpx2.request(
        "DELETE",
        f"{core.url}/account",
        json={"confirm": "leaver@example.com"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert erased.status_code == 401, erased.text
    assert erased.json()["error"]["code"] == "invalid_token"
    verify = httpx2.get(f"{core.url}/auth/verify", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert verify.status_code == 200 and verify.json()["email"] == "leaver@example.com"  # still there
