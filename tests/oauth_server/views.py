"""The test authorization server's own views around django-oauth-toolkit (DOT).

Issuers, one per registration style, all served by the same DOT endpoints:
- `<base>` (`root`): RFC 8414 metadata at the root; client ID metadata documents and dynamic registration;
- `<base>/dcr`: dynamic registration only; `<base>/cimd`: client ID metadata documents only;
- `<base>/none`: neither (a client must be pre-registered);
- `<base>/oidc`: OpenID discovery only (`<base>/oidc/.well-known/openid-configuration`), dynamic registration;
- `<base>/liar`: its metadata names another issuer.
Each issuer's authorization endpoint (`/v/<issuer>/authorize/`) adds `iss` (RFC 9207) to its answer.
Consent is given at once (every application skips it) for the signed-in user: `alice`, or the one
the `as_user` cookie names. `/test/stats` counts token requests; `/test/expire` ends every access
token now.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.request
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.models import AccessToken, Application, RefreshToken
from oauth2_provider.views import AuthorizationView

COUNTS: Counter[str] = Counter()
_lock = threading.Lock()
VARIANTS = {
    "root": {"cimd": True, "dcr": True},
    "dcr": {"cimd": False, "dcr": True},
    "cimd": {"cimd": True, "dcr": False},
    "none": {"cimd": False, "dcr": False},
    "oidc": {"cimd": False, "dcr": True},
    "liar": {"cimd": False, "dcr": True},
}


def _base(request: HttpRequest) -> str:
    return f"http://{request.get_host()}"


def issuer_of(request: HttpRequest, variant: str) -> str:
    return _base(request) if variant == "root" else f"{_base(request)}/{variant}"


def _metadata(request: HttpRequest, variant: str) -> dict:
    base = _base(request)
    issuer = issuer_of(request, variant)
    document = {
        "issuer": f"{base}/someone-else" if variant == "liar" else issuer,
        "authorization_endpoint": f"{base}/v/{variant}/authorize/",
        "token_endpoint": f"{base}/o/token/",
        "revocation_endpoint": f"{base}/o/revoke_token/",
        "introspection_endpoint": f"{base}/o/introspect/",
        "scopes_supported": ["tickets:read", "tickets:write"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": VARIANTS[variant]["cimd"],
    }
    if VARIANTS[variant]["dcr"]:
        document["registration_endpoint"] = f"{base}/register"
    return document


def oauth_metadata(request: HttpRequest, variant: str = "root") -> HttpResponse:
    if variant not in VARIANTS or variant == "oidc":
        return HttpResponse(status=404)
    return JsonResponse(_metadata(request, variant))


def openid_metadata(request: HttpRequest) -> HttpResponse:
    return JsonResponse({**_metadata(request, "oidc"), "subject_types_supported": ["public"]})


def authorize(request: HttpRequest, variant: str) -> HttpResponse:
    response = AuthorizationView.as_view()(request)
    location = response.get("Location", "")
    if response.status_code == 302 and ("code=" in location or "error=" in location):
        separator = "&" if "?" in location else "?"
        response["Location"] = f"{location}{separator}{urlencode({'iss': issuer_of(request, variant)})}"
    return response


@csrf_exempt
def register(request: HttpRequest) -> HttpResponse:
    """RFC 7591, enough of it: a client for the authorization code flow."""
    asked = json.loads(request.body or b"{}")
    method = asked.get("token_endpoint_auth_method", "client_secret_basic")
    secret = secrets.token_urlsafe(32)
    application = Application(
        name=asked.get("client_name", "dynamic"),
        client_type=Application.CLIENT_PUBLIC if method == "none" else Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=" ".join(asked.get("redirect_uris") or []),
        skip_authorization=True,
        client_secret=secret,
    )
    application.save()
    with _lock:
        COUNTS["registered"] += 1
    answer = {
        "client_id": application.client_id,
        "token_endpoint_auth_method": method,
        "redirect_uris": asked.get("redirect_uris"),
        "grant_types": ["authorization_code", "refresh_token"],
        "application_type": asked.get("application_type"),
    }
    if method != "none":
        answer["client_secret"] = secret
    return JsonResponse(answer, status=201)


def stats(request: HttpRequest) -> HttpResponse:
    user = request.GET.get("user", "alice")
    live = RefreshToken.objects.filter(user__username=user, revoked__isnull=True).count()
    revoked = RefreshToken.objects.filter(user__username=user, revoked__isnull=False).count()
    active = AccessToken.objects.filter(user__username=user, expires__gt=timezone.now()).count()
    with _lock:
        counts = dict(COUNTS)
    return JsonResponse(
        {
            "counts": counts,
            "live_refresh_tokens": live,
            "revoked_refresh_tokens": revoked,
            "active_access_tokens": active,
        }
    )


@csrf_exempt
def expire(request: HttpRequest) -> HttpResponse:
    AccessToken.objects.update(expires=timezone.now() - timezone.timedelta(seconds=1))
    return JsonResponse({"ok": True})


@csrf_exempt
def revoke_user(request: HttpRequest) -> HttpResponse:
    """The person revoked the client's access at the server (their account settings)."""
    for token in RefreshToken.objects.filter(user__username=request.GET.get("user", "alice"), revoked__isnull=True):
        token.revoke()
    return JsonResponse({"ok": True})


@csrf_exempt
def application(request: HttpRequest) -> HttpResponse:
    """A pre-registered client, as an administrator of the server would make one."""
    asked = json.loads(request.body or b"{}")
    secret = secrets.token_urlsafe(32)
    app = Application(
        name="pre-registered",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=asked.get("grant", Application.GRANT_AUTHORIZATION_CODE),
        redirect_uris=asked.get("redirect_uri", ""),
        skip_authorization=True,
        client_secret=secret,
    )
    app.save()
    return JsonResponse({"client_id": app.client_id, "client_secret": secret})


class TestLogin:
    """Everyone is signed in: `alice`, or the user the `as_user` cookie names (made on first use)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = request.COOKIES.get("as_user", "alice")
        request.user, _ = get_user_model().objects.get_or_create(username=name)
        return self.get_response(request)


class ClientMetadataDocuments:
    """A client id that is an http(s) URL is a client ID metadata document: fetched, checked (its
    `client_id` must be its own URL), and the client made or updated from it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        client_id = request.GET.get("client_id") or request.POST.get("client_id") or ""
        if client_id.startswith(("http://", "https://")):
            with urllib.request.urlopen(client_id, timeout=5) as answer:  # noqa: S310 - a test server
                document = json.loads(answer.read())
            if document.get("client_id") != client_id:
                return JsonResponse({"error": "invalid_client"}, status=400)
            with _lock:
                COUNTS["metadata_documents"] += 1
            Application.objects.update_or_create(
                client_id=client_id,
                defaults={
                    "name": document.get("client_name", "cimd"),
                    "client_type": Application.CLIENT_PUBLIC,
                    "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
                    "redirect_uris": " ".join(document.get("redirect_uris") or []),
                    "skip_authorization": True,
                },
            )
        return self.get_response(request)


class Counting:
    """Counts token requests by grant (and the refused ones) and revocations."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        grant = ""
        if request.path == "/o/token/" and request.method == "POST":
            grant = parse_qs(request.body.decode()).get("grant_type", [""])[0]
        response = self.get_response(request)
        with _lock:
            if grant:
                COUNTS[grant] += 1
                if response.status_code != 200:
                    COUNTS[f"{grant}_refused"] += 1
            if request.path == "/o/revoke_token/" and response.status_code == 200:
                COUNTS["revocations"] += 1
        return response


urlpatterns = [
    path(".well-known/oauth-authorization-server", oauth_metadata),
    path(".well-known/oauth-authorization-server/<str:variant>", oauth_metadata),
    path("oidc/.well-known/openid-configuration", openid_metadata),
    path("v/<str:variant>/authorize/", authorize),
    path("register", register),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("test/stats", stats),
    path("test/expire", expire),
    path("test/application", application),
    path("test/revoke", revoke_user),
]
_ = urlsplit  # (kept for readers: URLs are built from the request's host)
