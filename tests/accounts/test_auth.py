from __future__ import annotations

import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from accounts.services import token_pair_issue
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def login(api, email="alice@example.com", password=PASSWORD):
    return api.post("/auth/login", {"email": email, "password": password}, format="json")


def bearer(api, token: str):
    return api.get("/auth/verify", HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_json_login_returns_token_pair_and_claims(api, alice):
    response = login(api)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["claims"] == {"oid": str(alice.id), "name": "Alice", "email": "alice@example.com"}
    payload = jwt.decode(
        body["access_token"],
        settings.JWT_SIGNING_KEY,
        algorithms=["HS256"],
        audience=settings.JWT_AUDIENCE,
        issuer=settings.JWT_ISSUER,
    )
    assert payload["oid"] == str(alice.id)
    assert payload["email"] == alice.email and payload["name"] == "Alice"
    assert {"exp", "iat", "jti", "iss", "aud"} <= payload.keys()
    assert payload["exp"] - payload["iat"] == 15 * 60


def test_oauth2_password_form_login(api, alice):
    form = urlencode({"username": "ALICE@example.com", "password": PASSWORD, "grant_type": "password"})
    response = api.post("/auth/login", form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.json()["claims"]["oid"] == str(alice.id)


def test_signing_key_is_not_the_django_secret(api, alice):
    token = login(api).json()["access_token"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, settings.SECRET_KEY, algorithms=["HS256"], audience=settings.JWT_AUDIENCE)


def test_wrong_password_and_unknown_email_get_the_same_401(api, alice):
    wrong = login(api, password="not-the-password")
    unknown = login(api, email="nobody@example.com")
    assert_error(wrong, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()


def test_inactive_user_cannot_log_in(api, alice):
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert login(api).json() == login(api, email="nobody@example.com").json()


def test_login_requires_fields(api):
    error = assert_error(api.post("/auth/login", {"password": "x"}, format="json"), 400, "invalid_input")
    assert "email" in error["fields"]


def test_failed_logins_are_limited_per_account_with_retry_after(api, alice):
    for _ in range(5):
        assert_error(login(api, password="wrong"), 401)
    response = login(api)  # even the right password: the account is resting
    assert_error(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 15 * 60


def test_verify_returns_the_caller(api, alice):
    response = bearer(api, token_pair_issue(user=alice)["access_token"])
    assert response.status_code == 200
    assert response.json() == {"user_id": str(alice.id), "name": "Alice", "email": "alice@example.com"}


def test_refresh_rotates_and_the_old_refresh_token_is_dead(api, alice):
    first = login(api).json()
    response = api.post("/auth/refresh", {"refresh_token": first["refresh_token"]}, format="json")
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["claims"]["oid"] == str(alice.id)
    assert bearer(api, second["access_token"]).status_code == 200
    third = api.post("/auth/refresh", {"refresh_token": second["refresh_token"]}, format="json")
    assert third.status_code == 200
    assert_error(api.post("/auth/refresh", {"refresh_token": second["refresh_token"]}, format="json"), 401)


def test_access_token_is_not_a_refresh_token(api, alice):
    access = login(api).json()["access_token"]
    assert_error(api.post("/auth/refresh", {"refresh_token": access}, format="json"), 401)


def test_logout_kills_the_refresh_token(api, alice):
    pair = login(api).json()
    response = api.post("/auth/logout", {"refresh_token": pair["refresh_token"]}, format="json")
    assert response.status_code == 204
    assert BlacklistedToken.objects.count() == 1
    assert_error(api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json"), 401)
    assert_error(api.post("/auth/logout", {"refresh_token": pair["refresh_token"]}, format="json"), 401)


def test_refresh_refused_for_deactivated_user(api, alice):
    pair = login(api).json()
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert_error(api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json"), 401)


def _forge(claims: dict, *, key: str | None = None, algorithm: str = "HS256") -> str:
    now = int(time.time())
    user = User.objects.filter(id=claims["oid"]).first()
    payload = {
        "hash_password": get_md5_hash_password(user.password if user else ""),
        "token_type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        **claims,
    }
    return jwt.encode(payload, key or settings.JWT_SIGNING_KEY, algorithm=algorithm)


@pytest.mark.parametrize(
    "case",
    ["expired", "other_key", "alg_none", "wrong_audience", "wrong_issuer", "garbage", "unknown_user"],
)
def test_bad_access_tokens_are_401(api, alice, case):
    oid = str(alice.id)
    tokens = {
        "expired": lambda: _forge({"oid": oid, "iat": int(time.time()) - 3600, "exp": int(time.time()) - 60}),
        "other_key": lambda: _forge({"oid": oid}, key="another-signing-key-0123456789-abcdefghijklmnop"),
        "alg_none": lambda: jwt.encode(
            {
                "token_type": "access",
                "oid": oid,
                "jti": "x",
                "exp": int(time.time()) + 600,
                "iss": settings.JWT_ISSUER,
                "aud": settings.JWT_AUDIENCE,
            },
            None,
            algorithm="none",
        ),
        "wrong_audience": lambda: _forge({"oid": oid, "aud": "someone-else"}),
        "wrong_issuer": lambda: _forge({"oid": oid, "iss": "someone-else"}),
        "garbage": lambda: "not.a.jwt",
        "unknown_user": lambda: _forge({"oid": str(uuid.uuid4())}),
    }
    # Sanity: the forger makes tokens that work when nothing is wrong with them.
    assert bearer(api, _forge({"oid": oid})).status_code == 200
    assert_error(bearer(api, tokens[case]()), 401)


def test_token_of_deactivated_user_is_401(api, alice):
    token = token_pair_issue(user=alice)["access_token"]
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert_error(bearer(api, token), 401)


def test_token_of_deleted_user_is_401(api, alice):
    token = token_pair_issue(user=alice)["access_token"]
    alice.delete()
    assert_error(bearer(api, token), 401)


def test_access_token_expires_after_its_lifetime(api, alice):
    import time_machine

    token = token_pair_issue(user=alice)["access_token"]
    with time_machine.travel(timedelta(minutes=16), tick=False):
        from django.utils import timezone  # noqa: F401  (time is frozen 16 minutes ahead)

        assert_error(bearer(api, token), 401)


def test_missing_token_is_401_with_www_authenticate(api, db):
    response = api.get("/auth/verify")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_browser_that_logged_in_keeps_its_own_allowance_when_others_guess(alice, bob):
    """OWASP device cookies: five wrong passwords from elsewhere rest the account for everyone
    without the cookie, but not for the owner's browser, which has its own five."""
    from http.cookies import SimpleCookie

    from rest_framework.test import APIClient

    owner = APIClient(REMOTE_ADDR="198.51.100.7")
    response = login(owner)
    assert response.status_code == 200
    morsel = SimpleCookie(response.cookies["cortex_device"].output(header=""))["cortex_device"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/auth/login"
    assert int(morsel["max-age"]) == 90 * 86400

    attacker = APIClient(REMOTE_ADDR="203.0.113.66")
    for _ in range(5):
        assert_error(login(attacker, password="wrong"), 401)
    assert_error(login(attacker), 429, "throttled")  # the account rests for anyone without the cookie
    assert_error(
        login(APIClient(REMOTE_ADDR="198.51.100.7")), 429, "throttled"
    )  # the owner's address alone is not enough
    assert login(owner).status_code == 200  # the owner's browser is not locked out

    # Another account's cookie, or a forged one, is no pass for this account.
    bobs = APIClient()
    assert login(bobs, email="bob@example.com").status_code == 200
    assert_error(login(bobs), 429, "throttled")
    forged = APIClient()
    forged.cookies["cortex_device"] = owner.cookies["cortex_device"].value[:-3] + "abc"
    assert_error(login(forged), 429, "throttled")

    # The device's own allowance: its wrong guesses rest the device, not the account.
    for _ in range(5):
        assert_error(login(owner, password="wrong"), 401)
    assert_error(login(owner), 429, "throttled")
