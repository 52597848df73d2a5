"""The OAuth 2.1 side of MCP authorization, as a client: discovery, registration, token requests.

Built on the MCP SDK's auth models and helpers (`mcp.shared.auth`: ProtectedResourceMetadata,
OAuthMetadata, OAuthClientMetadata, OAuthClientInformationFull, OAuthToken; `mcp.client.auth.utils`:
the discovery URL lists, the `WWW-Authenticate` parsing, the issuer comparisons). The SDK's
`OAuthClientProvider` itself is not used: it runs the whole flow inside one process and one
`httpx` client (a redirect handler, a callback awaited in place, tokens in its own storage), while
here the flow spans two HTTP requests that any core process may serve, and tokens are shared by
every process under a database lock (`services`).

Every URL met (the expert's, the metadata's, the endpoints') obeys the expert host policy
(`hosts.url_refusal` now, `hosts.check_resolved` and the socket check when connecting), redirects
are never followed, and what a server answers is read up to `hosts.response_limit()`.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx2
from pydantic import ValidationError

from common.errors import CortexError, ErrorCode
from mcp_services.experts import hosts

if TYPE_CHECKING:
    from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken

# The SDK's models and helpers are imported where a flow runs, not with this module: every core
# process imports it at start-up (connections.services), and importing the MCP SDK is about 40% of
# a process's start (mcp_services.basics).

logger = logging.getLogger(__name__)

TIMEOUT = 10.0


def issuers_match(stated: str, expected: str) -> bool:
    """The SDK's issuer comparison (RFC 8414, section 3.3)."""
    from mcp.client.auth.utils import issuers_match as sdk_issuers_match

    return sdk_issuers_match(stated, expected)


class OAuthRefused(CortexError):
    """The authorization server refused a token request: `error` is its OAuth error code."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message)
        self.error = error


def _checked(url: str, what: str) -> str:
    refusal = hosts.url_refusal(url)
    if refusal is not None:
        raise CortexError(ErrorCode.INVALID_INPUT, f"The {what} ({url}) is not allowed: {refusal}")
    return url


def _http() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=hosts.BoundedTransport(hosts.checked_transport(), hosts.ResponseBudget(hosts.response_limit())),
        headers={"Accept-Encoding": "identity"},
        timeout=TIMEOUT,
        follow_redirects=False,
        trust_env=False,
    )


async def _send(http: httpx2.AsyncClient, method: str, url: str, what: str, **kwargs: Any) -> httpx2.Response:
    _checked(url, what)
    await hosts.check_resolved(url)
    try:
        return await http.request(method, url, **kwargs)
    except httpx2.HTTPError as exc:
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, f"The {what} ({url}) cannot be reached: {exc}") from None


@dataclass
class Setup:
    """What an `oauth` expert's discovery and registration found (stored as `Expert.oauth`; public
    but for nothing: the client's secret, if any, is in `OAuthClient`)."""

    resource: str
    issuer: str
    registration: str
    client_id: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    scopes_supported: list[str] | None = None
    challenge_scopes: list[str] | None = None
    iss_supported: bool = False
    # RFC 8707 `resource` on the authorization and token requests (MCP requires it); off only for a
    # server that refuses the parameter (Entra ID's v2.0 endpoints: AADSTS901002).
    resource_indicator: bool = True

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Setup:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]

    def scopes(self) -> list[str]:
        """The scopes asked for at first: the challenge's, else the resource's `scopes_supported`, else none."""
        if self.challenge_scopes:
            return list(self.challenge_scopes)
        return list(self.scopes_supported or [])


@dataclass
class Found:
    resource: str
    metadata: OAuthMetadata
    challenge_scopes: list[str] | None
    scopes_supported: list[str] | None = field(default=None)


async def discover(url: str) -> Found:
    """The expert's protected-resource metadata and its authorization server's metadata.

    Order: a request without a token (its 401's `WWW-Authenticate` `resource_metadata` and
    `scope`), then the path-scoped and the root well-known URLs (RFC 9728); the authorization
    server's RFC 8414 metadata, else OpenID discovery; each `issuer` must equal the one its URL was
    built from, and the resource metadata's `resource` must be the expert's URL (or a prefix)."""
    from mcp.client.auth.utils import (
        build_protected_resource_metadata_discovery_urls,
        extract_resource_metadata_from_www_auth,
        extract_scope_from_www_auth,
    )
    from mcp.shared.auth import ProtectedResourceMetadata
    from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url

    async with _http() as http:
        probe = await _send(
            http,
            "POST",
            url,
            "expert URL",
            headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
            content=json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "cortex", "version": "1"},
                    },
                }
            ),
        )
        await probe.aread()
        header_url = extract_resource_metadata_from_www_auth(probe) if probe.status_code in (401, 403) else None
        scope = extract_scope_from_www_auth(probe) if probe.status_code in (401, 403) else None
        resource_metadata: ProtectedResourceMetadata | None = None
        for candidate in build_protected_resource_metadata_discovery_urls(header_url, url):
            response = await _send(http, "GET", candidate, "protected-resource metadata URL")
            if response.status_code != 200:
                continue
            try:
                resource_metadata = ProtectedResourceMetadata.model_validate_json(await response.aread())
            except ValidationError:
                continue
            break
        if resource_metadata is None:
            raise CortexError(
                ErrorCode.INVALID_INPUT,
                f"The expert publishes no protected-resource metadata (RFC 9728; it answered {probe.status_code}"
                " without a token).",
                fields={"url": ["No OAuth protected-resource metadata found."]},
            )
        resource = resource_url_from_server_url(url)
        if not check_resource_allowed(resource, str(resource_metadata.resource)):
            raise CortexError(
                ErrorCode.INVALID_INPUT,
                f"The protected-resource metadata names another resource ({resource_metadata.resource}).",
                fields={"url": ["Resource mismatch."]},
            )
        issuer = str(resource_metadata.authorization_servers[0])
        metadata = await _authorization_server(http, issuer, url)
    return Found(
        resource=str(resource_metadata.resource),
        metadata=metadata,
        challenge_scopes=scope.split() if scope else None,
        scopes_supported=resource_metadata.scopes_supported,
    )


async def _authorization_server(http: httpx2.AsyncClient, issuer: str, url: str) -> OAuthMetadata:
    from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls
    from mcp.shared.auth import OAuthMetadata

    # pydantic's AnyHttpUrl adds a "/" to a bare origin: the issuer as the server wrote it is kept.
    issuer = issuer.rstrip("/") if issuer.count("/") == 3 else issuer
    for candidate in build_oauth_authorization_server_metadata_discovery_urls(issuer, url):
        response = await _send(http, "GET", candidate, "authorization server metadata URL")
        if response.status_code != 200:
            await response.aread()
            if 300 <= response.status_code < 500:
                continue
            break
        raw = await response.aread()
        try:
            metadata = OAuthMetadata.model_validate_json(raw)
        except ValidationError:
            continue
        stated = json.loads(raw).get("issuer", "")
        if not issuers_match(stated, issuer):
            raise CortexError(
                ErrorCode.INVALID_INPUT,
                f"The authorization server's metadata names another issuer ({stated}, expected {issuer}).",
                fields={"url": ["Issuer mismatch."]},
            )
        if metadata.code_challenge_methods_supported is not None and "S256" not in (
            metadata.code_challenge_methods_supported
        ):
            raise CortexError(ErrorCode.INVALID_INPUT, "The authorization server does not support PKCE with S256.")
        for endpoint in (metadata.authorization_endpoint, metadata.token_endpoint):
            _checked(str(endpoint), "authorization server endpoint")
        return metadata
    raise CortexError(
        ErrorCode.INVALID_INPUT,
        f"No authorization server metadata found for {issuer} (RFC 8414 or OpenID discovery).",
        fields={"url": ["No authorization server metadata."]},
    )


async def register_dynamically(metadata: OAuthMetadata, redirect_uri: str) -> OAuthClientInformationFull:
    """RFC 7591: a confidential web client (`client_secret_basic` when offered, else `none`)."""
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

    methods = metadata.token_endpoint_auth_methods_supported or ["client_secret_basic"]
    method = "client_secret_basic" if "client_secret_basic" in methods else "none"
    asked = OAuthClientMetadata(
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        client_name="Cortex",
        application_type="web",
    )
    async with _http() as http:
        response = await _send(
            http,
            "POST",
            str(metadata.registration_endpoint),
            "registration endpoint",
            json=asked.model_dump(by_alias=True, mode="json", exclude_none=True),
        )
        raw = await response.aread()
    if response.status_code not in (200, 201):
        raise CortexError(
            ErrorCode.INVALID_INPUT,
            f"Dynamic registration was refused ({response.status_code}): {raw[:300].decode(errors='replace')}",
        )
    try:
        return OAuthClientInformationFull.model_validate_json(raw)
    except ValidationError as exc:
        raise CortexError(ErrorCode.INVALID_INPUT, f"Dynamic registration answered nonsense: {exc}") from None


@dataclass(frozen=True)
class ClientAuth:
    client_id: str
    client_secret: str
    method: str  # "none" | "client_secret_basic" | "client_secret_post"


def _authenticated(client: ClientAuth, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    headers = {"Accept": "application/json"}
    form = dict(form)
    if client.method == "client_secret_basic" and client.client_secret:
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = client.client_id
        if client.method == "client_secret_post" and client.client_secret:
            form["client_secret"] = client.client_secret
    return form, headers


async def token_request(setup: Setup, client: ClientAuth, form: dict[str, str]) -> OAuthToken:
    """A token endpoint request (a code redeemed, or a refresh) with the client's own auth method
    and `resource` (RFC 8707). Raises `OAuthRefused` with the server's error code."""
    from mcp.shared.auth import OAuthToken

    if setup.resource_indicator is not False:
        form = {**form, "resource": setup.resource}
    form, headers = _authenticated(client, form)
    async with _http() as http:
        response = await _send(http, "POST", setup.token_endpoint, "token endpoint", data=form, headers=headers)
        raw = await response.aread()
    if response.status_code != 200:
        try:
            error = str(json.loads(raw).get("error") or "server_error")
        except ValueError:
            error = "server_error"
        raise OAuthRefused(error, f"The authorization server refused the token request ({error}).")
    try:
        data = json.loads(raw)
        data.pop("id_token", None)  # an ID token never goes anywhere: it is not kept
        if str(data.get("token_type", "")).lower() == "bearer":
            data["token_type"] = "Bearer"
        return OAuthToken.model_validate(data)
    except (ValueError, ValidationError):
        raise OAuthRefused("invalid_response", "The token endpoint answered something that is not a token.") from None


async def revoke(setup: Setup, client: ClientAuth, token: str, hint: str) -> bool:
    """RFC 7009, where the server offers it; True when the server accepted it. Never raises."""
    if not setup.revocation_endpoint or not token:
        return False
    form, headers = _authenticated(client, {"token": token, "token_type_hint": hint})
    try:
        async with _http() as http:
            response = await _send(
                http, "POST", setup.revocation_endpoint, "revocation endpoint", data=form, headers=headers
            )
            await response.aread()
    except CortexError as exc:
        logger.warning("revocation at %s failed: %s", setup.issuer, exc.message)
        return False
    return response.status_code == 200
