"""Sign-in with an identity provider, against a real OpenID provider on loopback (tests.oidc_provider)
whose keys the tests make: the exchange, its negative matrix, Entra- and B2C-shaped discovery
documents, provisioning, and the code flow up to the single-use login code (the browser's part is
tests/browser/test_oidc_browser.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework.test import APIClient

from accounts.models import ExternalIdentity, User
from accounts.oidc import forget_provider_caches
from accounts.oidc_views import BROWSER_COOKIE
from tests.accounts.test_auth import assert_error, bearer
from tests.factories import UserFactory
from tests.oidc_provider import B2C_TENANT, CLIENT_ID, CLIENT_SECRET, ENTRA_TENANT, OidcProvider, make_key
from tests.servers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def idp():
    provider = OidcProvider()
    yield provider
    provider.close()


def provider_entries(idp: OidcProvider) -> list[dict]:
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return [
        {"name": "generic", "issuer": idp.generic, "provision": "auto", **client},
        {"name": "generic-existing", "issuer": idp.generic, "provision": "existing", **client},
        {"name": "generic-off", "issuer": idp.generic, "provision": "off", **client},
        {"name": "entra", "issuer": idp.entra_authority, "provision": "auto", "tenants": [ENTRA_TENANT], **client},
        {"name": "b2c", "issuer": idp.b2c_authority, "provision": "auto", "policy": "B2C_1_signin", **client},
    ]


@pytest.fixture(autouse=True)
def configured(idp, settings):
    settings.OIDC_PROVIDERS = provider_entries(idp)
    forget_provider_caches()
    idp.jwks_fetches.clear()
    idp.id_token_overrides = {}
    idp.user = {"sub": "user-1", "email": "user-1@example.com", "email_verified": True, "name": "User One"}
    yield
    forget_provider_caches()


def exchange(api, id_token: str, provider: str = "generic"):
    return api.post("/auth/exchange", {"provider": provider, "id_token": id_token}, format="json")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict, sign=None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode())) if sign else ''}"


def claims(idp: OidcProvider, **overrides) -> dict:
    now = int(time.time())
    return {"iss": idp.generic, "aud": CLIENT_ID, "iat": now, "exp": now + 300, **idp.user, **overrides}


# The exchange


def test_exchange_provisions_a_user_and_returns_a_cortex_token_pair(api, idp):
    response = exchange(api, idp.mint())
    assert response.status_code == 200, response.content
    pair = response.json()
    user = User.objects.get(email="user-1@example.com")
    assert pair["claims"] == {"oid": str(user.id), "name": "User One", "email": "user-1@example.com"}
    assert not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject, identity.provider) == (idp.generic, "user-1", "generic")
    assert bearer(api, pair["access_token"]).json()["user_id"] == str(user.id)
    refreshed = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")
    assert refreshed.status_code == 200


def test_a_linked_identity_signs_in_to_the_same_user(api, idp):
    first = exchange(api, idp.mint()).json()["claims"]["oid"]
    second = exchange(api, idp.mint(email="renamed@example.com")).json()["claims"]["oid"]
    assert first == second
    assert User.objects.count() == 1
    assert ExternalIdentity.objects.get().email == "renamed@example.com"


@pytest.mark.parametrize("alg", ["PS256", "ES256", "EdDSA"])
def test_every_announced_asymmetric_algorithm_is_accepted(api, idp, alg):
    key = idp.rotate(alg)
    assert exchange(api, idp.mint(key=key)).status_code == 200


def test_a_rotated_key_is_fetched_once(api, idp, settings):
    settings.OIDC_KEY_REFRESH_SECONDS = 1
    assert exchange(api, idp.mint()).status_code == 200
    assert sum(idp.jwks_fetches.values()) == 1
    new_key = idp.rotate()
    time.sleep(1.1)  # past the refresh interval that the first fetch started
    assert exchange(api, idp.mint(key=new_key)).status_code == 200
    assert exchange(api, idp.mint(key=new_key)).status_code == 200
    assert sum(idp.jwks_fetches.values()) == 2


def test_forged_kids_cost_the_provider_at_most_one_fetch_a_minute(api, idp):
    assert exchange(api, idp.mint()).status_code == 200
    stranger = make_key("forged")
    for index in range(10):
        forged = idp.mint(key=make_key(f"forged-{index}") if index % 2 else stranger, sub=f"victim-{index}")
        assert_error(exchange(api, forged), 401, "invalid_token")
    assert sum(idp.jwks_fetches.values()) == 1


def _hs256_with_public_key(idp: OidcProvider) -> str:
    public_pem = idp.signing_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return unsigned(
        {"alg": "HS256", "typ": "JWT", "kid": idp.signing_key.kid},
        claims(idp),
        sign=lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
    )


NEGATIVE = {
    "wrong aud": lambda idp: idp.mint(aud="someone-else"),
    "wrong iss": lambda idp: idp.mint(iss="http://127.0.0.1:1/elsewhere"),
    "expired": lambda idp: idp.mint(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "nbf in the future": lambda idp: idp.mint(nbf=int(time.time()) + 3600),
    "iat in the future": lambda idp: idp.mint(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200),
    "no exp": lambda idp: idp.mint(exp=None),
    "no sub": lambda idp: idp.mint(sub=None),
    "alg none": lambda idp: unsigned({"alg": "none", "kid": idp.signing_key.kid}, claims(idp)),
    "HS256 with the public key": _hs256_with_public_key,
    "RSA key named by an ES256 header": lambda idp: unsigned(
        {"alg": "ES256", "kid": idp.signing_key.kid}, claims(idp), sign=lambda data: b"x" * 64
    ),
    "bad signature": lambda idp: idp.mint()[:-6] + "AAAAAA",
    "another audience's azp": lambda idp: idp.mint(aud=[CLIENT_ID, "other"], azp="other"),
    "not a JWT": lambda idp: "not-a-jwt",
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_invalid_id_tokens_are_refused(api, idp, case):
    error = assert_error(exchange(api, NEGATIVE[case](idp)), 401, "invalid_token")
    assert error["message"] == "The identity provider's token is not accepted."
    assert not User.objects.exists() and not ExternalIdentity.objects.exists()


def test_an_unknown_provider_is_refused(api, idp):
    assert_error(exchange(api, idp.mint(), provider="nobody"), 401, "invalid_token")


def test_an_unreachable_provider_is_a_503(api, idp, settings):
    settings.OIDC_PROVIDERS = [{**provider_entries(idp)[0], "issuer": f"http://127.0.0.1:{free_port()}/gone"}]
    assert_error(exchange(api, idp.mint()), 503, "service_unavailable")


def test_failed_exchanges_are_throttled_like_failed_logins(api, idp, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    for _ in range(3):
        assert_error(exchange(api, idp.mint(aud="wrong")), 401)
    refused = exchange(api, idp.mint())  # the claimed identity is locked out, even with a good token
    assert_error(refused, 429, "throttled")
    assert int(refused["Retry-After"]) > 0
    idp.user = {**idp.user, "sub": "someone-else", "email": "else@example.com"}
    assert exchange(api, idp.mint()).status_code == 200  # another identity is not


# Entra ID (multi-tenant) and B2C discovery documents


def test_entra_multi_tenant_issuer_takes_the_tokens_tenant(api, idp):
    token = idp.mint(iss=idp.entra_issuer(ENTRA_TENANT), tid=ENTRA_TENANT)
    response = exchange(api, token, provider="entra")
    assert response.status_code == 200, response.content
    assert ExternalIdentity.objects.get().issuer == idp.entra_issuer(ENTRA_TENANT)
    assert idp.jwks_fetches["entra/discovery/v2.0/keys"] == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"tid": "00000000-0000-0000-0000-000000000001"},  # a tenant that is not listed
        {"tid": None},  # no tenant at all
        {"iss_tenant": "00000000-0000-0000-0000-000000000001"},  # the issuer of another tenant than tid
        {"iss": "http://127.0.0.1:1/entra/{tenantid}/v2.0"},  # the template itself
    ],
    ids=["unlisted tenant", "no tid", "iss of another tenant", "template as iss"],
)
def test_entra_tokens_of_other_tenants_are_refused(api, idp, overrides):
    tenant = overrides.get("tid", ENTRA_TENANT)
    issuer = overrides.get("iss") or idp.entra_issuer(overrides.get("iss_tenant", tenant or ENTRA_TENANT))
    token = idp.mint(iss=issuer, tid=tenant)
    assert_error(exchange(api, token, provider="entra"), 401, "invalid_token")


def test_b2c_policy_issuer_and_emails_claim(api, idp):
    token = idp.mint(iss=idp.b2c_issuer, tfp="B2C_1_signin", email=None, emails=["b2c@example.com"])
    response = exchange(api, token, provider="b2c")
    assert response.status_code == 200, response.content
    assert response.json()["claims"]["email"] == "b2c@example.com"
    assert idp.b2c_issuer.endswith(f"/{B2C_TENANT}/v2.0/")


@pytest.mark.parametrize("policy", [{"tfp": "B2C_1_passwordreset"}, {}], ids=["other policy", "no policy"])
def test_b2c_tokens_of_another_policy_are_refused(api, idp, policy):
    token = idp.mint(iss=idp.b2c_issuer, **policy)
    assert_error(exchange(api, token, provider="b2c"), 401, "invalid_token")


def test_b2c_acr_claim_names_the_policy_too(api, idp):
    token = idp.mint(iss=idp.b2c_issuer, acr="b2c_1_signin")
    assert exchange(api, token, provider="b2c").status_code == 200


# Provisioning and links


def test_existing_links_a_verified_email_to_its_user(api, idp, alice):
    idp.user = {"sub": "alice-at-idp", "email": "Alice@Example.com", "email_verified": True}
    response = exchange(api, idp.mint(), provider="generic-existing")
    assert response.status_code == 200
    assert response.json()["claims"]["oid"] == str(alice.id)
    assert ExternalIdentity.objects.get().user == alice
    assert alice.identities.count() == 1


@pytest.mark.parametrize("verified", [False, "true", None], ids=["false", "string true", "absent"])
def test_existing_refuses_an_unverified_email(api, idp, alice, verified):
    idp.user = {"sub": "alice-at-idp", "email": "alice@example.com", "email_verified": verified}
    assert_error(exchange(api, idp.mint(), provider="generic-existing"), 401, "invalid_token")
    assert not ExternalIdentity.objects.exists()


@pytest.mark.parametrize("verified", [False, "true", None], ids=["false", "string true", "absent"])
def test_auto_refuses_to_create_an_account_from_an_unverified_email(api, idp, verified):
    """Issue 24 (low): an unverified address would squat it (and `existing` providers would later
    link its real owner's verified identity to the squatter's account)."""
    idp.user = {"sub": "squatter", "email": "victim@example.com", "email_verified": verified}
    assert_error(exchange(api, idp.mint()), 401, "invalid_token")
    assert not User.objects.exists() and not ExternalIdentity.objects.exists()


@pytest.mark.parametrize("flag", ["is_staff", "is_superuser"])
def test_existing_never_links_a_staff_account_by_email(api, idp, flag):
    """Issue 24 (low): a verified email at some provider is no proof for the admin; an operator
    links staff by hand (issuer and `sub`)."""
    staff = UserFactory(email="root@example.com", **{flag: True})
    idp.user = {"sub": "someone", "email": "root@example.com", "email_verified": True}
    assert_error(exchange(api, idp.mint(), provider="generic-existing"), 401, "invalid_token")
    assert not ExternalIdentity.objects.exists()
    ExternalIdentity.objects.create(user=staff, provider="generic-existing", issuer=idp.generic, subject="someone")
    assert exchange(api, idp.mint(), provider="generic-existing").json()["claims"]["oid"] == str(staff.id)


def test_existing_refuses_an_email_nobody_has(api, idp):
    assert_error(exchange(api, idp.mint(), provider="generic-existing"), 401)
    assert not User.objects.exists()


def test_auto_never_links_by_email_alone(api, idp, alice):
    idp.user = {"sub": "impostor", "email": "alice@example.com", "email_verified": True}
    assert_error(exchange(api, idp.mint()), 401, "invalid_token")
    assert not ExternalIdentity.objects.exists()


def test_off_refuses_unknown_identities_but_signs_in_linked_ones(api, idp, alice):
    assert_error(exchange(api, idp.mint(), provider="generic-off"), 401)
    ExternalIdentity.objects.create(user=alice, provider="generic-off", issuer=idp.generic, subject="user-1")
    assert exchange(api, idp.mint(), provider="generic-off").json()["claims"]["oid"] == str(alice.id)


def test_a_deactivated_linked_user_is_refused(api, idp):
    exchange(api, idp.mint())
    User.objects.update(is_active=False)
    assert_error(exchange(api, idp.mint()), 401, "invalid_token")


def test_deleting_the_link_ends_that_providers_sign_ins(api, idp):
    pair = exchange(api, idp.mint()).json()
    password_user = User.objects.get()
    password_user.set_password("a-password-too-1234")
    password_user.save(update_fields=["password"])
    password_pair = api.post(
        "/auth/login", {"email": "user-1@example.com", "password": "a-password-too-1234"}, format="json"
    ).json()

    ExternalIdentity.objects.get().delete()

    assert_error(exchange(api, idp.mint()), 401, "invalid_token")  # auto: the email is now someone else's
    refresh = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")
    assert_error(refresh, 401, "invalid_refresh_token")
    # The user's password login is theirs, not the provider's: it goes on.
    assert (
        api.post("/auth/refresh", {"refresh_token": password_pair["refresh_token"]}, format="json").status_code == 200
    )


def test_providers_are_listed_with_their_login_urls(api):
    body = api.get("/auth/providers").json()
    assert body["providers"][0] == {"name": "generic", "login_url": "/auth/oidc/generic/login"}
    assert [provider["name"] for provider in body["providers"]] == [
        "generic",
        "generic-existing",
        "generic-off",
        "entra",
        "b2c",
    ]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"issuer": "http://idp.example.com"}, "http:// only on loopback"),
        ({"provision": "sometimes"}, "provision must be one of"),
        ({"client_id": ""}, "client_id must be"),
        ({"name": "Has Spaces"}, "name must be"),
        ({"colour": "blue"}, "unknown keys: colour"),
    ],
)
def test_check_validates_oidc_providers(idp, settings, entry, message):
    settings.OIDC_PROVIDERS = [{**provider_entries(idp)[0], **entry}]
    with pytest.raises(SystemCheckError, match=message):
        call_command("check")


def test_check_refuses_duplicate_names(idp, settings):
    settings.OIDC_PROVIDERS = [provider_entries(idp)[0]] * 2
    with pytest.raises(SystemCheckError, match="unique: generic"):
        call_command("check")


# The code flow, up to the login code (in-process client; the browser test drives Chromium)


def start(client, return_to: str = "/app?tab=1", provider: str = "generic") -> dict[str, str]:
    """Begin a sign-in in `client`'s "browser" and let the provider answer: the callback's query."""
    response = client.get(f"/auth/oidc/{provider}/login", {"return_to": return_to})
    assert response.status_code == 302, response.content
    authorize = response["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"]
    answer = requests.get(authorize, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def callback(client, query: dict[str, str], provider: str = "generic"):
    return client.get(f"/auth/oidc/{provider}/callback", query)


def test_code_flow_ends_with_a_single_use_login_code(idp):
    browser = APIClient()
    response = callback(browser, start(browser))
    assert response.status_code == 302, response.content
    target = urlsplit(response["Location"])
    assert target.path == "/app" and not target.netloc
    query = parse_qs(target.query)
    assert query["tab"] == ["1"] and set(query) == {"tab", "login_code"}
    code = query["login_code"][0]

    pair = browser.post("/auth/login-code", {"login_code": code}, format="json")
    assert pair.status_code == 200
    assert pair.json()["claims"]["email"] == "user-1@example.com"
    assert_error(browser.post("/auth/login-code", {"login_code": code}, format="json"), 401, "invalid_token")
    token_request = idp.token_requests[-1]
    assert token_request["code_verifier"][0] and token_request["grant_type"] == ["authorization_code"]


def test_a_login_code_expires(idp, time_machine):
    browser = APIClient()
    code = parse_qs(urlsplit(callback(browser, start(browser))["Location"]).query)["login_code"][0]
    time_machine.move_to(time.time() + 61, tick=False)
    assert_error(browser.post("/auth/login-code", {"login_code": code}, format="json"), 401)


def test_a_login_code_signs_in_only_the_browser_that_started_its_flow(idp):
    """Login CSRF: the attacker stops their own sign-in at the callback and sends the code to the
    victim. The victim's browser (another sign-in cookie, or none) redeems nothing, and the code
    is spent."""
    attacker = APIClient()
    code = parse_qs(urlsplit(callback(attacker, start(attacker))["Location"]).query)["login_code"][0]
    cookie = attacker.cookies[BROWSER_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    victim = APIClient()
    assert_error(victim.post("/auth/login-code", {"login_code": code}, format="json"), 401, "invalid_token")
    assert_error(attacker.post("/auth/login-code", {"login_code": code}, format="json"), 401, "invalid_token")
    # A victim that has a sign-in cookie of its own (it started a flow once) is refused the same way.
    victim.get("/auth/oidc/generic/login", {"return_to": "/"})
    code = parse_qs(urlsplit(callback(attacker, start(attacker))["Location"]).query)["login_code"][0]
    assert victim.cookies[BROWSER_COOKIE].value != attacker.cookies[BROWSER_COOKIE].value
    assert_error(victim.post("/auth/login-code", {"login_code": code}, format="json"), 401, "invalid_token")


def test_two_flows_of_one_browser_share_its_sign_in_cookie_and_both_codes_work(idp):
    browser = APIClient()
    first, second = start(browser), start(browser)
    value = browser.cookies[BROWSER_COOKIE].value
    codes = [parse_qs(urlsplit(callback(browser, q)["Location"]).query)["login_code"][0] for q in (first, second)]
    assert browser.cookies[BROWSER_COOKIE].value == value
    for code in codes:
        assert browser.post("/auth/login-code", {"login_code": code}, format="json").status_code == 200


def test_a_return_to_that_already_carries_a_login_code_is_refused(idp):
    for return_to in ("/console/?login_code=theirs", "/console/?a=1&login_code=", "/x?login%5Fcode=theirs"):
        response = APIClient().get("/auth/oidc/generic/login", {"return_to": return_to})
        assert_error(response, 400, "invalid_input")
        assert response.json()["error"]["fields"]["return_to"] == ["Must not carry a login_code."]


def test_a_mismatched_state_is_refused(idp):
    browser = APIClient()
    query = start(browser)
    assert_error(callback(browser, {**query, "state": "forged-state"}), 401, "invalid_token")


def test_a_callback_in_another_browser_is_refused(idp):
    query = start(APIClient())
    assert_error(callback(APIClient(), query), 401, "invalid_token")
    assert not ExternalIdentity.objects.exists()


def test_a_wrong_nonce_is_refused(idp):
    idp.id_token_overrides = {"nonce": "another-flows-nonce"}
    browser = APIClient()
    assert_error(callback(browser, start(browser)), 401, "invalid_token")
    assert not ExternalIdentity.objects.exists()


def test_a_code_from_another_browsers_flow_fails_pkce(idp):
    victim, attacker = APIClient(), APIClient()
    victim_query = start(victim)
    attacker_query = start(attacker)  # the attacker's own code, bound to the attacker's challenge
    response = callback(victim, {"code": attacker_query["code"], "state": victim_query["state"]})
    assert_error(response, 401, "invalid_token")
    assert idp.token_requests[-1]["code"] == [attacker_query["code"]]  # the provider saw it and refused


def test_a_replayed_callback_is_refused(idp):
    browser = APIClient()
    query = start(browser)
    assert callback(browser, query).status_code == 302
    assert_error(callback(browser, query), 401, "invalid_token")


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "app", "http:/x"],
)
def test_return_to_elsewhere_is_refused(return_to):
    response = APIClient().get("/auth/oidc/generic/login", {"return_to": return_to})
    assert_error(response, 400, "invalid_input")
    assert "return_to" in response.json()["error"]["fields"]


def test_an_unknown_providers_login_is_404():
    assert_error(APIClient().get("/auth/oidc/nobody/login"), 404, "not_found")


def admin_sign_in(client):
    query = start(client, return_to="/admin/oidc/complete?next=/admin/accounts/user/")
    target = urlsplit(callback(client, query)["Location"])
    return client.get(target.path, {k: v[0] for k, v in parse_qs(target.query).items()})


def test_the_admin_signs_in_a_linked_staff_user(idp, client):
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    ExternalIdentity.objects.create(user=staff, provider="generic", issuer=idp.generic, subject="staff-sub")
    idp.user = {"sub": "staff-sub", "email": "staff@example.com"}
    page = client.get("/admin/login/?next=/admin/accounts/user/")
    assert b'data-provider="generic"' in page.content
    done = admin_sign_in(client)
    assert done.status_code == 302 and done["Location"] == "/admin/accounts/user/"
    assert client.get("/admin/accounts/user/").status_code == 200


def test_the_admin_refuses_a_linked_user_who_is_not_staff(idp, client):
    done = admin_sign_in(client)  # provisioned by "auto": linked, but not staff
    assert done.status_code == 302 and done["Location"] == "/admin/login/"
    assert ExternalIdentity.objects.exists()
    assert client.get("/admin/").status_code == 302  # still signed out
    assert b"may not use the admin site" in client.get("/admin/login/").content


def test_check_warns_about_an_open_multi_tenant_provider(settings):
    from accounts.checks import oidc_providers_check

    entry = {
        "name": "entra",
        "issuer": "https://login.microsoftonline.com/organizations/v2.0",
        "client_id": "x",
        "provision": "auto",
    }
    settings.OIDC_PROVIDERS = [entry]
    assert [message.id for message in oidc_providers_check()] == ["accounts.W001"]
    settings.OIDC_PROVIDERS = [{**entry, "tenants": [ENTRA_TENANT]}]
    assert oidc_providers_check() == []


def test_the_admin_shows_links_and_deleting_one_there_revokes_its_logins(api, idp, client):
    pair = exchange(api, idp.mint()).json()
    identity = ExternalIdentity.objects.get()
    client.force_login(UserFactory(email="root@example.com", is_staff=True, is_superuser=True))
    assert b"user-1" in client.get(f"/admin/accounts/user/{identity.user_id}/change/").content
    assert b"user-1@example.com" in client.get("/admin/accounts/externalidentity/").content
    deleted = client.post(f"/admin/accounts/externalidentity/{identity.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not ExternalIdentity.objects.exists()
    refresh = api.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json")
    assert_error(refresh, 401, "invalid_refresh_token")
