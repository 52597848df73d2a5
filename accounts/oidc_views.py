"""Sign-in with identity providers: the exchange of an ID token, the browser's code flow, and the
admin's hand-over. Thin: `accounts.oidc` checks tokens, `accounts.services` links and issues.

The code flow's `state`, `nonce` and PKCE verifier live in a signed, HttpOnly cookie named after
the state and scoped to the provider's paths: only the browser that started a flow can finish it,
and a second tab's flow does not overwrite the first's. The flow ends with a single-use
`login_code` in `return_to` (a path of this site), never with a token in a URL.

A login code belongs to the browser that started its flow (against login CSRF: an attacker who
stops their own sign-in at the callback and sends the victim `?login_code=<theirs>` signs nobody
in). The login sets `BROWSER_COOKIE` (HttpOnly, SameSite=Lax, a random value kept while it lives,
so two tabs' flows share it); the code keeps the value's SHA-256, and `/auth/login-code` and the
admin's hand-over redeem it only with that cookie. A `return_to` that already carries a
`login_code` is refused (the first code in a URL would win).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.common.security import generate_token
from django.contrib import messages
from django.contrib.auth import login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import AuthenticationFailed, NotFound, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

import audit
from accounts import limits
from accounts.oidc import (
    IdTokenRejected,
    Provider,
    ProviderUnavailable,
    authorization_url,
    claimed_subject,
    code_redeem,
    id_token_claims,
    provider_get,
    providers,
)
from accounts.serializers import (
    ExchangeInputSerializer,
    LoginCodeInputSerializer,
    ProvidersOutputSerializer,
    TokenPairSerializer,
)
from accounts.services import (
    LOGIN_CODE_SECONDS,
    IdentityRefused,
    browser_hash,
    identity_sign_in,
    identity_token_pair_issue,
    login_code_create,
    login_code_redeem,
)
from accounts.views import _PublicAuthView
from common.errors import CortexError, ErrorCode
from common.web.addresses import client_address
from common.web.throttles import AddressRateThrottle

logger = logging.getLogger(__name__)

FLOW_SECONDS = 600
FLOW_SALT = "cortex.oidc.flow"
BROWSER_COOKIE = "cortex_sign_in_browser"
BROWSER_SECONDS = FLOW_SECONDS + LOGIN_CODE_SECONDS


def _browser(request: HttpRequest) -> str:
    """This browser's sign-in cookie value ("" when it has none)."""
    value = request.COOKIES.get(BROWSER_COOKIE, "")
    return value if 32 <= len(value) <= 128 and value.isascii() else ""


def _carries_login_code(return_to: str) -> bool:
    return "login_code" in parse_qs(urlsplit(return_to).query, keep_blank_values=True)


def _refused(reason: object) -> AuthenticationFailed:
    logger.info("OIDC sign-in refused: %s", reason)
    return AuthenticationFailed("The identity provider's token is not accepted.", code="invalid_token")


def _unavailable(reason: object) -> CortexError:
    logger.warning("OIDC provider unavailable: %s", reason)
    return CortexError(ErrorCode.SERVICE_UNAVAILABLE, "The identity provider cannot be reached; retry later.")


def _provider_or_404(name: str) -> Provider:
    provider = provider_get(name)
    if provider is None:
        raise NotFound("No such identity provider.")
    return provider


def login_path(provider: Provider) -> str:
    return reverse("auth-oidc-login", args=[provider.name])


class _LoginView(_PublicAuthView):
    throttle_classes = [AddressRateThrottle]
    throttle_scope = "login"


class ProvidersApi(_LoginView):
    @extend_schema(responses={200: ProvidersOutputSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        listed = [{"name": provider.name, "login_url": login_path(provider)} for provider in providers().values()]
        return Response({"providers": listed})


class ExchangeApi(_LoginView):
    """An ID token a client got itself (MSAL, AppAuth) for a Cortex token pair.

    Failures count like failed logins: per claimed identity (the token's unverified issuer and
    `sub`, as a password login counts per claimed email) and per client address.
    """

    @extend_schema(request=ExchangeInputSerializer, responses={200: TokenPairSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = ExchangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        name, raw = data.validated_data["provider"], data.validated_data["id_token"]
        account = f"oidc:{name}:{claimed_subject(raw)}"
        address = client_address(request._request)
        try:
            limits.login_attempt_begin(email=account, address=address)
        except limits.LoginLimited as limited:
            raise Throttled(wait=limited.retry_after) from None
        provider = provider_get(name)
        try:
            if provider is None:
                raise IdTokenRejected(f"unknown provider {name!r}")
            identity = identity_sign_in(provider=provider, claims=id_token_claims(provider, raw))
        except (IdTokenRejected, IdentityRefused) as exc:
            audit.record_refused(
                None, "auth.login_failed", ip=address, target=name[:100], detail={"method": "provider"}
            )
            raise _refused(exc) from None
        except ProviderUnavailable as exc:
            limits.login_attempt_succeeded(email=account, address=address)  # not the client's failure
            raise _unavailable(exc) from None
        limits.login_attempt_succeeded(email=account, address=address)
        with transaction.atomic():
            pair = identity_token_pair_issue(identity=identity)
            audit.record(identity.user_id, "auth.login", ip=address, target=name, detail={"method": "provider"})
        return Response(pair)


class LoginCodeApi(_LoginView):
    @extend_schema(request=LoginCodeInputSerializer, responses={200: TokenPairSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = LoginCodeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        address = client_address(request._request)
        try:
            identity = login_code_redeem(
                login_code=data.validated_data["login_code"], browser=_browser(request._request)
            )
        except IdentityRefused as exc:
            audit.record_refused(None, "auth.login_failed", ip=address, detail={"method": "login_code"})
            raise _refused(exc) from None
        with transaction.atomic():
            pair = identity_token_pair_issue(identity=identity)
            audit.record(identity.user_id, "auth.login", ip=address, detail={"method": "login_code"})
        return Response(pair)


def same_origin_path(value: str) -> bool:
    """A path of this site ("/app?x=1"), not a URL elsewhere ("https://x", "//x", "/\\x")."""
    return (
        len(value) <= 2000
        and value.startswith("/")
        and not value.startswith("//")
        and url_has_allowed_host_and_scheme(value, allowed_hosts=set())
    )


def _flow_cookie(state: str) -> str:
    return "cortex_oidc_" + hashlib.sha256(state.encode()).hexdigest()[:16]


def _callback_uri(request: Request, provider: Provider) -> str:
    return request.build_absolute_uri(reverse("auth-oidc-callback", args=[provider.name]))


class OidcLoginApi(_LoginView):
    @extend_schema(
        parameters=[OpenApiParameter("return_to", str, description="A path of this site (default /).")],
        responses={302: None},
        auth=[],
    )
    def get(self, request: Request, provider: str) -> HttpResponse:
        found = _provider_or_404(provider)
        return_to = request.query_params.get("return_to") or "/"
        if not same_origin_path(return_to):
            raise ValidationError({"return_to": ["Must be a path of this site."]})
        if _carries_login_code(return_to):
            raise ValidationError({"return_to": ["Must not carry a login_code."]})
        browser = _browser(request._request) or generate_token(43)
        flow = {
            "provider": found.name,
            "state": generate_token(43),
            "nonce": generate_token(43),
            "verifier": generate_token(64),  # RFC 7636: 43-128 characters
            "return_to": return_to,
            "browser": browser_hash(browser),
        }
        try:
            url = authorization_url(
                found,
                redirect_uri=_callback_uri(request, found),
                state=flow["state"],
                nonce=flow["nonce"],
                code_verifier=flow["verifier"],
            )
        except ProviderUnavailable as exc:
            raise _unavailable(exc) from None
        response = HttpResponseRedirect(url)
        response["Cache-Control"] = "no-store"
        response.set_signed_cookie(
            _flow_cookie(flow["state"]),
            json.dumps(flow),
            salt=FLOW_SALT,
            max_age=FLOW_SECONDS,
            path=f"/auth/oidc/{found.name}/",
            secure=request.is_secure(),
            httponly=True,
            samesite="Lax",  # sent on the provider's top-level redirect back, not on cross-site posts
        )
        response.set_cookie(
            BROWSER_COOKIE,
            browser,
            max_age=BROWSER_SECONDS,
            path="/",  # /auth/login-code and the admin's hand-over read it
            secure=request.is_secure(),
            httponly=True,
            samesite="Lax",
        )
        return response


class OidcCallbackApi(_LoginView):
    @extend_schema(responses={302: None}, auth=[])
    def get(self, request: Request, provider: str) -> HttpResponse:
        found = _provider_or_404(provider)
        state = request.query_params.get("state", "")
        cookie = _flow_cookie(state)
        raw = request._request.get_signed_cookie(cookie, default=None, salt=FLOW_SALT, max_age=FLOW_SECONDS)
        flow = json.loads(raw) if raw else None
        if not state or flow is None or flow["provider"] != found.name or not hmac.compare_digest(flow["state"], state):
            raise _refused("no sign-in with this state was started in this browser")
        if "error" in request.query_params or not request.query_params.get("code"):
            raise _refused(f"the provider answered {request.query_params.get('error', 'without a code')}")
        try:
            id_token = code_redeem(
                found,
                code=request.query_params["code"],
                redirect_uri=_callback_uri(request, found),
                code_verifier=flow["verifier"],
            )
            identity = identity_sign_in(provider=found, claims=id_token_claims(found, id_token, nonce=flow["nonce"]))
        except (IdTokenRejected, IdentityRefused) as exc:
            raise _refused(exc) from None
        except ProviderUnavailable as exc:
            raise _unavailable(exc) from None
        return_to = flow["return_to"]
        if _carries_login_code(return_to) or not flow.get("browser"):
            raise _refused("a return_to that already carries a login_code, or a flow of no browser")
        separator = "&" if "?" in return_to else "?"
        code = login_code_create(identity=identity, browser_hash=flow["browser"])
        response = HttpResponseRedirect(return_to + separator + urlencode({"login_code": code}))
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        response.delete_cookie(cookie, path=f"/auth/oidc/{found.name}/")
        return response


def admin_login_url(provider: Provider, next_path: str) -> str:
    """Where the admin login page sends a staff user who signs in with `provider`."""
    complete = reverse("admin-oidc-complete") + "?" + urlencode({"next": next_path})
    return login_path(provider) + "?" + urlencode({"return_to": complete})


def admin_oidc_complete(request: HttpRequest) -> HttpResponse:
    """The end of an admin sign-in through a provider: a linked, active staff user gets a session."""
    try:
        identity = login_code_redeem(login_code=request.GET.get("login_code", ""), browser=_browser(request))
    except IdentityRefused as exc:
        logger.info("OIDC admin sign-in refused: %s", exc)
        identity = None
    if identity is None or not identity.user.is_staff:
        messages.error(request, "This account may not use the admin site.")
        return redirect("admin:login")
    login(request, identity.user, backend="accounts.backends.LimitedModelBackend")
    next_path = request.GET.get("next", "")
    if not same_origin_path(next_path):
        next_path = reverse("admin:index")
    return redirect(next_path)
