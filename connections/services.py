"""Writes of connected accounts: registration, the authorization code flow, tokens and their refresh,
disconnection and erasure.

Refresh, exactly once per expiry (`bearer`): a token due within OAUTH_REFRESH_MARGIN_SECONDS (plus
up to OAUTH_REFRESH_JITTER_SECONDS, so that many processes do not all come at once) is refreshed
under the connection's lock, which every process takes: a row lock (`SELECT ... FOR UPDATE`) on
PostgreSQL, the database's write lock on SQLite (its transactions are IMMEDIATE). Whoever holds it
reads the row again: if another process refreshed meanwhile, its token is used, and no second
request is made. The token request is made while the lock is held, and the rotated refresh token
is stored in the same transaction, so a refresh token is never sent twice (a server with reuse
detection would revoke the whole grant). An `invalid_grant` marks the connection `needs_reconsent`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import secrets
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import audit
from common.errors import CortexError, ErrorCode
from connections import crypto, oauth, signals
from connections.models import Connection, OAuthClient, PendingFlow
from mcp_services import client as service_client
from mcp_services.experts.credentials import ExpertNeedsConnection
from workspaces.models import Expert

if TYPE_CHECKING:
    from mcp.shared.auth import OAuthToken

logger = logging.getLogger(__name__)

FLOW_SECONDS = 600


def _run(factory: Any) -> Any:
    return service_client.call(factory, timeout=oauth.TIMEOUT * 3 + 1)


def redirect_uri() -> str:
    return f"{settings.OAUTH_PUBLIC_URL.rstrip('/')}/oauth/callback"


def client_metadata_url() -> str:
    return (
        settings.OAUTH_CLIENT_METADATA_URL or f"{settings.OAUTH_PUBLIC_URL.rstrip('/')}/.well-known/oauth-client.json"
    )


def client_metadata_document() -> dict[str, Any]:
    return {
        "client_id": client_metadata_url(),
        "client_name": "Cortex",
        "client_uri": settings.OAUTH_PUBLIC_URL,
        "redirect_uris": [redirect_uri()],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


# -- registration ------------------------------------------------------------------------------


def setup(*, url: str, options: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Discover the expert's authorization server and register the core with it (see CONTRACT):
    the owner's pre-registered client, else the client ID metadata document, else dynamic
    registration (one client per issuer, reused), else a 400 saying what to give. Returns what
    `Expert.oauth` keeps."""
    found = _run(lambda: oauth.discover(url))
    metadata = found.metadata
    issuer = str(metadata.issuer)
    issuer = issuer.rstrip("/") if issuer.count("/") == 3 else issuer
    if options.get("client_id"):
        method = options.get("token_endpoint_auth_method") or (
            "client_secret_basic" if options.get("client_secret") else "none"
        )
        registered = _client_save(
            issuer,
            options["client_id"],
            options.get("client_secret") or "",
            method,
            OAuthClient.Registration.PRE_REGISTERED,
        )
    elif metadata.client_id_metadata_document_supported:
        registered = _client_save(issuer, client_metadata_url(), "", "none", OAuthClient.Registration.METADATA_DOCUMENT)
    elif metadata.registration_endpoint is not None:
        reused = (
            OAuthClient.objects.filter(issuer=issuer, registration=OAuthClient.Registration.DYNAMIC)
            .order_by("-created_at")
            .first()
        )
        if reused is not None:
            registered = reused
        else:
            info = _run(lambda: oauth.register_dynamically(metadata, redirect_uri()))
            registered = _client_save(
                issuer,
                info.client_id,
                info.client_secret or "",
                info.token_endpoint_auth_method or ("client_secret_basic" if info.client_secret else "none"),
                OAuthClient.Registration.DYNAMIC,
            )
    else:
        raise CortexError(
            ErrorCode.INVALID_INPUT,
            f"The authorization server {issuer} offers neither client ID metadata documents nor dynamic"
            f" registration: register a client there (redirect URI {redirect_uri()}) and give its"
            " `oauth.client_id` (and `oauth.client_secret`, `oauth.token_endpoint_auth_method` for a"
            " confidential client).",
            fields={"oauth.client_id": ["Required by this authorization server."]},
        )
    scopes = options.get("scopes")
    return oauth.Setup(
        resource=found.resource,
        issuer=issuer,
        registration=registered.registration,
        client_id=registered.client_id,
        authorization_endpoint=str(metadata.authorization_endpoint),
        token_endpoint=str(metadata.token_endpoint),
        revocation_endpoint=str(metadata.revocation_endpoint) if metadata.revocation_endpoint else None,
        scopes_supported=found.scopes_supported or metadata.scopes_supported,
        challenge_scopes=list(scopes) if scopes else found.challenge_scopes,
        iss_supported=bool(metadata.authorization_response_iss_parameter_supported),
        resource_indicator=options.get("resource_indicator", True),
    ).as_json()


def _client_save(issuer: str, client_id: str, secret: str, method: str, registration: str) -> OAuthClient:
    registered, _ = OAuthClient.objects.update_or_create(
        issuer=issuer,
        client_id=client_id,
        defaults={
            "client_secret": crypto.seal(secret),
            "token_endpoint_auth_method": method,
            "registration": registration,
        },
    )
    return registered


def _client_for(expert: Expert) -> tuple[oauth.Setup, OAuthClient]:
    if expert.auth != Expert.Auth.OAUTH or not expert.oauth:
        raise CortexError(ErrorCode.NOT_FOUND, "This expert does not connect accounts.")
    found = oauth.Setup.of(expert.oauth)
    registered = OAuthClient.objects.filter(issuer=found.issuer, client_id=found.client_id).first()
    if registered is None:
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, "The expert's OAuth client is gone: refresh the expert.")
    return found, registered


def _auth(registered: OAuthClient) -> oauth.ClientAuth:
    return oauth.ClientAuth(
        registered.client_id, crypto.unseal(registered.client_secret), registered.token_endpoint_auth_method
    )


# -- connecting --------------------------------------------------------------------------------


def _browser_hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def flow_start(*, user_id: uuid.UUID, expert: Expert, return_to: str) -> tuple[str, str]:
    """An authorization code flow with PKCE (S256), `state` and `resource`: returns the URL to
    send the browser to and the cookie value binding the flow to that browser. Scopes: what the
    connection already has plus what a step-up asked for, else the challenge's, else the
    resource's `scopes_supported`, else none."""
    found, registered = _client_for(expert)
    existing = Connection.objects.filter(user_id=user_id, expert=expert).first()
    scopes = found.scopes()
    if existing is not None:
        scopes = _union(existing.scopes, existing.wanted_scopes or scopes)
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, cookie = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    PendingFlow.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=FLOW_SECONDS)).delete()
    PendingFlow.objects.create(
        state=state,
        user_id=user_id,
        expert=expert,
        client=registered,
        browser=_browser_hash(cookie),
        verifier=crypto.seal(verifier),
        scopes=scopes,
        return_to=return_to,
    )
    query = {
        "response_type": "code",
        "client_id": registered.client_id,
        "redirect_uri": redirect_uri(),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if found.resource_indicator is not False:
        query["resource"] = found.resource
    if scopes:
        query["scope"] = " ".join(scopes)
    separator = "&" if "?" in found.authorization_endpoint else "?"
    return f"{found.authorization_endpoint}{separator}{urlencode(query)}", cookie


class ConnectFailed(Exception):
    def __init__(self, code: str, return_to: str = "/console/") -> None:
        super().__init__(code)
        self.code, self.return_to = code, return_to


def flow_finish(
    *, state: str, code: str, iss: str | None, error: str | None, cookie: str, ip: str | None = None
) -> tuple[PendingFlow, Connection]:
    """The callback: the flow's `state` and its browser cookie, then `iss` (RFC 9207), then the
    code redeemed (with the verifier and `resource`); the tokens stored encrypted. Raises
    `ConnectFailed` with the reason's code (and where to send the browser back)."""
    flow = PendingFlow.objects.select_related("expert", "client").filter(state=state).first()
    if flow is None or flow.created_at < timezone.now() - timedelta(seconds=FLOW_SECONDS):
        raise ConnectFailed("invalid_state")
    PendingFlow.objects.filter(state=state).delete()  # one use, whatever happens next
    if not cookie or not secrets.compare_digest(flow.browser, _browser_hash(cookie)):
        raise ConnectFailed("invalid_state", flow.return_to)
    found, registered = _client_for(flow.expert)
    if iss is not None and not oauth.issuers_match(iss, found.issuer):
        raise ConnectFailed("issuer_mismatch", flow.return_to)
    if iss is None and found.iss_supported:
        raise ConnectFailed("issuer_missing", flow.return_to)
    if error:
        raise ConnectFailed("access_denied" if error == "access_denied" else "authorization_failed", flow.return_to)
    if not code:
        raise ConnectFailed("authorization_failed", flow.return_to)
    verifier = crypto.unseal(flow.verifier)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri(), "code_verifier": verifier}
    try:
        token = _run(lambda: oauth.token_request(found, _auth(registered), form))
    except oauth.OAuthRefused:
        raise ConnectFailed("token_refused", flow.return_to) from None
    except CortexError:
        raise ConnectFailed("unreachable", flow.return_to) from None
    granted = token.scope.split() if token.scope else flow.scopes
    now = timezone.now()
    with transaction.atomic():
        connection, _ = Connection.objects.select_for_update().update_or_create(
            user_id=flow.user_id,
            expert=flow.expert,
            defaults={
                "client": registered,
                "issuer": found.issuer,
                "status": Connection.Status.CONNECTED,
                "scopes": granted,
                "wanted_scopes": [],
                "access_token": crypto.seal(token.access_token),
                "refresh_token": crypto.seal(token.refresh_token or ""),
                "expires_at": _expiry(token, now),
                "connected_at": now,
            },
        )
        user_id, expert_id = flow.user_id, flow.expert_id
        audit.record(
            user_id,
            "connection.made",
            ip=ip,
            target=str(expert_id),
            detail={"workspace_id": str(flow.expert.workspace_id), "expert": flow.expert.name, "scopes": granted},
        )
        transaction.on_commit(
            lambda: signals.account_connected.send(sender=Connection, user_id=user_id, expert_id=expert_id)
        )
    return flow, connection


def tools_discover(*, expert: Expert, user_id: uuid.UUID) -> None:
    """Tools are listed with the first connected account: an expert that has none listed yet is
    discovered now, on behalf of the one who just connected (best effort: a turn lists them too)."""
    if expert.status == Expert.Status.OK:
        return
    from mcp_services.experts.calls import expert_refresh  # the MCP SDK: only when tools are listed

    try:
        _run(lambda: expert_refresh(expert, user_id=user_id))
    except Exception as exc:  # noqa: BLE001 - the connection stands; the tools are listed later
        logger.warning("expert %s: tools not listed after connecting: %s", expert.id, exc)


def _expiry(token: OAuthToken, now: datetime) -> datetime | None:
    return now + timedelta(seconds=int(token.expires_in)) if token.expires_in else None


def _union(*lists: list[str]) -> list[str]:
    merged: list[str] = []
    for scopes in lists:
        merged.extend(scope for scope in scopes if scope not in merged)
    return merged


def disconnect(*, user_id: uuid.UUID, expert: Expert, ip: str | None = None) -> bool:
    """Revoke at the server (RFC 7009, refresh token then access token) and forget."""
    connections = list(Connection.objects.select_related("expert", "client").filter(user_id=user_id, expert=expert))
    revoke_and_delete(connections)  # network calls: no transaction (nor SQLite's write lock) held
    if connections:
        detail = {"workspace_id": str(expert.workspace_id), "expert": expert.name}
        audit.record(user_id, "connection.removed", ip=ip, target=str(expert.id), detail=detail)
    return bool(connections)


def revoke_and_delete(connections: list[Connection]) -> None:
    """Each connection's tokens revoked at its server (best effort: a server that cannot be reached
    does not keep the row), then the rows deleted."""
    for connection in connections:
        try:
            found, registered = _client_for(connection.expert)
            auth = _auth(registered)
            refresh, access = crypto.unseal(connection.refresh_token), crypto.unseal(connection.access_token)
        except CortexError as exc:
            logger.warning("connection %s: not revoked (%s)", connection.id, exc.message)
            continue
        if refresh:
            _run(lambda f=found, a=auth, t=refresh: oauth.revoke(f, a, t, "refresh_token"))
        if access:
            _run(lambda f=found, a=auth, t=access: oauth.revoke(f, a, t, "access_token"))
    Connection.objects.filter(id__in=[connection.id for connection in connections]).delete()


# -- calls ----------------------------------------------------------------------------------------


def _needs(expert: Expert, reason: str, scopes: list[str] | None = None) -> ExpertNeedsConnection:
    found = oauth.Setup.of(expert.oauth or {})
    return ExpertNeedsConnection(expert.id, expert.name, scopes if scopes is not None else found.scopes(), reason)


def _due(connection: Connection, now: datetime) -> bool:
    if connection.expires_at is None:
        return False
    margin = settings.OAUTH_REFRESH_MARGIN_SECONDS + random.uniform(0, settings.OAUTH_REFRESH_JITTER_SECONDS)  # noqa: S311
    return connection.expires_at - now <= timedelta(seconds=margin)


def bearer(*, expert_id: uuid.UUID, user_id: uuid.UUID, stale: str | None = None) -> str:
    """`user_id`'s access token for the expert, refreshed first when it is due (or, with `stale`,
    when the expert refused that token and nobody has refreshed it since). Raises
    `ExpertNeedsConnection`. Sync (ORM): call it through `db_call`."""
    connection = Connection.objects.filter(user_id=user_id, expert_id=expert_id).first()
    if connection is not None and connection.status == Connection.Status.CONNECTED:
        token = crypto.unseal(connection.access_token)
        if stale is None and not _due(connection, timezone.now()):
            return token  # the common case: one indexed read
        if stale is not None and token != stale:
            return token  # refreshed by someone else since this call read it
    expert = Expert.objects.get(id=expert_id)
    if connection is None:
        raise _needs(expert, "not_connected")
    if connection.status == Connection.Status.NEEDS_RECONSENT:
        raise _needs(expert, "needs_reconsent", _union(connection.scopes, connection.wanted_scopes))
    refused: str | None = None
    with transaction.atomic():  # the connection's lock: FOR UPDATE, or SQLite's write lock
        connection = Connection.objects.select_for_update().get(id=connection.id)
        token = crypto.unseal(connection.access_token)
        if connection.status != Connection.Status.CONNECTED:
            refused = "needs_reconsent"
        elif (stale is None and not _due(connection, timezone.now())) or (stale is not None and token != stale):
            return token
        else:
            refresh = crypto.unseal(connection.refresh_token)
            if not refresh:
                refused = "invalid_grant"
            else:
                found, registered = _client_for(expert)
                form = {"grant_type": "refresh_token", "refresh_token": refresh}
                if connection.scopes:
                    form["scope"] = " ".join(connection.scopes)
                try:
                    fresh = _run(lambda: oauth.token_request(found, _auth(registered), form))
                except oauth.OAuthRefused as exc:
                    if exc.error not in ("invalid_grant", "invalid_client", "unauthorized_client"):
                        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, exc.message) from None
                    refused = exc.error
                else:
                    now = timezone.now()
                    connection.access_token = crypto.seal(fresh.access_token)
                    if fresh.refresh_token:  # rotated: stored with the access token, in this transaction
                        connection.refresh_token = crypto.seal(fresh.refresh_token)
                    connection.expires_at = _expiry(fresh, now)
                    if fresh.scope:
                        connection.scopes = fresh.scope.split()
                    connection.refreshed_at, connection.refreshes = now, connection.refreshes + 1
                    connection.save(
                        update_fields=[
                            "access_token",
                            "refresh_token",
                            "expires_at",
                            "scopes",
                            "refreshed_at",
                            "refreshes",
                        ]
                    )
                    return fresh.access_token
        if refused is not None:
            Connection.objects.filter(id=connection.id).update(status=Connection.Status.NEEDS_RECONSENT)
    logger.info("connection %s: refresh refused (%s): needs reconsent", connection.id, refused)
    raise _needs(expert, "needs_reconsent", _union(connection.scopes, connection.wanted_scopes))


def step_up(*, expert_id: uuid.UUID, user_id: uuid.UUID, scopes: list[str]) -> list[str]:
    """`insufficient_scope`: the scopes to ask for next, the ones already granted kept."""
    connection = Connection.objects.filter(user_id=user_id, expert_id=expert_id).first()
    if connection is None:
        return scopes
    wanted = _union(connection.scopes, connection.wanted_scopes, scopes)
    Connection.objects.filter(id=connection.id).update(wanted_scopes=wanted)
    return wanted
