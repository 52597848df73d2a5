"""OpenID Connect providers: their configuration, discovery documents, keys, and ID token checks.

The protocol is the libraries': PyJWT verifies signatures and registered claims and its
`PyJWKClient` caches each provider's key set (an unknown `kid` refetches it at most once per
`OIDC_KEY_REFRESH_SECONDS`, so rotation works and a flood of forged `kid`s costs the provider
nothing); Authlib's OAuth 2.0 client builds the authorization request with PKCE (S256) and
redeems the code. What is Cortex's own:

- Only asymmetric algorithms that the provider announces are accepted, and only with a key of
  the matching type: `none` and HMAC (including HS256 "signed" with the public key) never verify.
- The expected issuer is the discovery document's `issuer`, not the configured URL: Entra's
  multi-tenant documents say `https://login.microsoftonline.com/{tenantid}/v2.0` (the token's
  `tid` goes in, limited to `tenants` when configured), and B2C serves a policy's document at a
  policy URL whose `issuer` names the tenant (`policy` then pins the token's `tfp`/`acr`).
- Provider outages are 503s (`ProviderUnavailable`); every other failure is one refusal
  (`IdTokenRejected`, a 401), its reason only in the log.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings

logger = logging.getLogger(__name__)

PROVISION_MODES = ("auto", "existing", "off")
# Asymmetric JWS algorithms, by the JWK key type that may verify them.
KEY_TYPE_ALGORITHMS = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = frozenset().union(*KEY_TYPE_ALGORITHMS.values())
TENANT_TEMPLATE = "{tenantid}"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_TENANT = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class IdTokenRejected(Exception):
    """The ID token is not accepted (the reason is for the log, never for the client)."""


class ProviderUnavailable(Exception):
    """The provider's discovery document, keys or token endpoint could not be reached."""


@dataclass(frozen=True)
class Provider:
    name: str
    issuer: str
    client_id: str
    client_secret: str | None
    provision: str
    scopes: tuple[str, ...]
    tenants: tuple[str, ...]  # allowed `tid`s when the issuer is Entra's `{tenantid}` template
    policy: str | None  # B2C: the user flow / custom policy the token must come from (`tfp`/`acr`)

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def url_error(url: Any, what: str) -> str | None:
    """Why `url` may not be used for a provider: https only, plain http only on loopback."""
    if not isinstance(url, str) or not url:
        return f"{what} must be a URL"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return None
    return f"{what} must be an https:// URL (http:// only on loopback), got {url!r}"


def _entry_errors(index: int, entry: Any) -> list[str]:
    where = f"OIDC_PROVIDERS[{index}]"
    if not isinstance(entry, dict):
        return [f"{where} must be an object"]
    errors = []
    known = {"name", "issuer", "client_id", "client_secret", "provision", "scopes", "tenants", "policy"}
    if unknown := sorted(set(entry) - known):
        errors.append(f"{where} has unknown keys: {', '.join(unknown)}")
    if not isinstance(entry.get("name"), str) or not _NAME.match(entry["name"]):
        errors.append(f"{where}.name must be 1-64 lowercase letters, digits, '-' or '_'")
    if error := url_error(entry.get("issuer"), f"{where}.issuer"):
        errors.append(error)
    if not isinstance(entry.get("client_id"), str) or not entry["client_id"]:
        errors.append(f"{where}.client_id must be a non-empty string")
    if entry.get("client_secret") is not None and not isinstance(entry["client_secret"], str):
        errors.append(f"{where}.client_secret must be a string")
    if entry.get("provision") not in PROVISION_MODES:
        errors.append(f"{where}.provision must be one of {', '.join(PROVISION_MODES)}")
    for key in ("scopes", "tenants"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            errors.append(f"{where}.{key} must be a list of strings")
    if not all(_TENANT.match(tenant) for tenant in entry.get("tenants") or [] if isinstance(tenant, str)):
        errors.append(f"{where}.tenants must be tenant ids")
    if entry.get("policy") is not None and (not isinstance(entry["policy"], str) or not entry["policy"]):
        errors.append(f"{where}.policy must be a non-empty string")
    return errors


def config_errors(raw: Any) -> list[str]:
    """Everything wrong with an `OIDC_PROVIDERS` value (`manage.py check` reports these)."""
    if not isinstance(raw, list):
        return ["OIDC_PROVIDERS must be a JSON list of provider objects"]
    errors = [error for index, entry in enumerate(raw) for error in _entry_errors(index, entry)]
    names = [entry.get("name") for entry in raw if isinstance(entry, dict)]
    if duplicates := sorted({name for name in names if isinstance(name, str) and names.count(name) > 1}):
        errors.append(f"OIDC_PROVIDERS names must be unique: {', '.join(duplicates)}")
    return errors


_parsed: tuple[str, dict[str, Provider]] | None = None


def providers() -> dict[str, Provider]:
    """The configured providers by name (an invalid configuration is reported by `manage.py
    check`; here its invalid entries are left out, so one typo does not stop password logins)."""
    global _parsed
    raw = settings.OIDC_PROVIDERS
    fingerprint = json.dumps(raw, sort_keys=True, default=str)
    if _parsed is not None and _parsed[0] == fingerprint:
        return _parsed[1]
    found: dict[str, Provider] = {}
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if _entry_errors(index, entry) or entry["name"] in found:
            continue
        scopes = ["openid", *[scope for scope in entry.get("scopes") or ["profile", "email"] if scope != "openid"]]
        found[entry["name"]] = Provider(
            name=entry["name"],
            issuer=entry["issuer"],
            client_id=entry["client_id"],
            client_secret=entry.get("client_secret") or None,
            provision=entry["provision"],
            scopes=tuple(scopes),
            tenants=tuple(entry.get("tenants") or ()),
            policy=entry.get("policy"),
        )
    _parsed = (fingerprint, found)
    return found


def provider_get(name: Any) -> Provider | None:
    return providers().get(name) if isinstance(name, str) else None


class _ProviderKeys:
    """One provider's discovery document and key set, cached for this process."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._fresh_until = 0.0
        self._failed_until = 0.0
        self._jwks: jwt.PyJWKClient | None = None

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None and time.monotonic() < self._failed_until:
                # A provider that is down is asked again in a few seconds, not once per request.
                raise ProviderUnavailable(f"{self.provider.name}: discovery failed moments ago")
            if self._metadata is None or time.monotonic() >= self._fresh_until:
                try:
                    self._metadata = _fetch_metadata(self.provider)
                    self._fresh_until = time.monotonic() + settings.OIDC_DISCOVERY_SECONDS
                except ProviderUnavailable:
                    if self._metadata is None:
                        self._failed_until = time.monotonic() + 5
                        raise
                    # Keep serving the last good document; try again in a minute, not per request.
                    logger.warning(
                        "OIDC provider %s: discovery failed, keeping the cached document", self.provider.name
                    )
                    self._fresh_until = time.monotonic() + 60
            return self._metadata

    def signing_key(self, kid: str) -> jwt.PyJWK:
        jwks_uri = self.metadata()["jwks_uri"]
        with self._lock:
            if self._jwks is None or self._jwks.uri != jwks_uri:
                self._jwks = jwt.PyJWKClient(
                    jwks_uri,
                    lifespan=settings.OIDC_KEYS_SECONDS,
                    cooldown_duration=settings.OIDC_KEY_REFRESH_SECONDS,
                    timeout=settings.OIDC_HTTP_TIMEOUT_SECONDS,
                )
            client = self._jwks
        try:
            return client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise ProviderUnavailable(f"{self.provider.name}: keys unavailable: {exc}") from None
        except jwt.PyJWTError as exc:
            raise IdTokenRejected(f"no usable key {kid!r}: {exc}") from None


def _fetch_metadata(provider: Provider) -> dict[str, Any]:
    try:
        response = requests.get(
            provider.discovery_url, timeout=settings.OIDC_HTTP_TIMEOUT_SECONDS, allow_redirects=False
        )
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"{provider.name}: discovery failed: {exc}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("issuer"), str):
        raise ProviderUnavailable(f"{provider.name}: the discovery document has no issuer")
    for key in ("jwks_uri", "authorization_endpoint", "token_endpoint"):
        if (key in metadata or key == "jwks_uri") and (
            error := url_error(metadata.get(key), f"{provider.name}'s {key}")
        ):
            raise ProviderUnavailable(error)
    return metadata


_states: dict[Provider, _ProviderKeys] = {}
_states_lock = threading.Lock()


def _state(provider: Provider) -> _ProviderKeys:
    with _states_lock:
        state = _states.get(provider)
        if state is None:
            state = _states[provider] = _ProviderKeys(provider)
        return state


def forget_provider_caches() -> None:
    """Drop every cached discovery document and key set (tests; a reconfigured process)."""
    with _states_lock:
        _states.clear()


def metadata_get(provider: Provider) -> dict[str, Any]:
    return _state(provider).metadata()


def _expected_issuer(provider: Provider, template: str, unverified: dict[str, Any]) -> str:
    if TENANT_TEMPLATE not in template:
        return template
    tenant = unverified.get("tid")
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise IdTokenRejected("a multi-tenant issuer needs a tid claim")
    if provider.tenants and tenant not in provider.tenants:
        raise IdTokenRejected(f"tenant {tenant} is not allowed")
    return template.replace(TENANT_TEMPLATE, tenant)


def id_token_claims(provider: Provider, raw: str, *, nonce: str | None = None) -> dict[str, Any]:
    """The verified claims of `raw`, an ID token `provider` issued to us; else `IdTokenRejected`.

    Checked: an announced asymmetric algorithm and a key of its type, the signature, `iss`, `aud`
    (and `azp` when present), `exp`, `iat`, `nbf`, `sub`, the nonce of a code flow, and the
    configured B2C policy.
    """
    try:
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise IdTokenRejected(f"malformed: {exc}") from None
    metadata = _state(provider).metadata()
    announced = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithm = header.get("alg")
    if algorithm not in ASYMMETRIC_ALGORITHMS or algorithm not in announced:
        raise IdTokenRejected(f"algorithm {algorithm!r} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise IdTokenRejected("no kid")
    key = _state(provider).signing_key(kid)
    if algorithm not in KEY_TYPE_ALGORITHMS.get(key.key_type or "", ()):
        raise IdTokenRejected(f"key {kid!r} ({key.key_type}) cannot verify {algorithm}")
    issuer = _expected_issuer(provider, metadata["issuer"], unverified)
    leeway = settings.OIDC_LEEWAY_SECONDS
    try:
        claims = jwt.decode(
            raw,
            key.key,
            algorithms=[algorithm],
            audience=provider.client_id,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["iss", "aud", "exp", "iat", "sub"], "enforce_minimum_key_length": True},
        )
    except jwt.PyJWTError as exc:
        raise IdTokenRejected(str(exc)) from None
    if not isinstance(claims["iat"], int | float) or claims["iat"] > time.time() + leeway:
        raise IdTokenRejected("issued in the future")
    if not isinstance(claims["sub"], str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise IdTokenRejected("bad sub")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if ("azp" in claims or len(audiences) > 1) and claims.get("azp") != provider.client_id:
        raise IdTokenRejected("azp is not this client")
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise IdTokenRejected("nonce mismatch")
    if provider.policy is not None:
        policy = claims.get("tfp") or claims.get("acr")
        if not isinstance(policy, str) or policy.lower() != provider.policy.lower():
            raise IdTokenRejected(f"policy {policy!r} is not {provider.policy}")
    return claims


def claimed_subject(raw: Any) -> str:
    """Who a token *claims* to be, unverified: the key that failed exchanges are counted by."""
    try:
        unverified = jwt.decode(str(raw), options={"verify_signature": False})
    except jwt.PyJWTError:
        return "?"
    return f"{unverified.get('iss')}|{unverified.get('sub')}"


def _oauth_session(provider: Provider, metadata: dict[str, Any], redirect_uri: str) -> OAuth2Session:
    auth_methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if provider.client_secret is None:
        auth_method = "none"  # a public client: PKCE is its proof
    elif "client_secret_basic" in auth_methods:
        auth_method = "client_secret_basic"
    else:
        auth_method = "client_secret_post"
    return OAuth2Session(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )


def authorization_url(provider: Provider, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
    metadata = metadata_get(provider)
    if "authorization_endpoint" not in metadata:
        raise ProviderUnavailable(f"{provider.name} has no authorization endpoint")
    with _oauth_session(provider, metadata, redirect_uri) as session:
        url, _ = session.create_authorization_url(
            metadata["authorization_endpoint"], state=state, nonce=nonce, code_verifier=code_verifier
        )
    return url


def code_redeem(provider: Provider, *, code: str, redirect_uri: str, code_verifier: str) -> str:
    """The ID token the provider's token endpoint gives for `code` (with the PKCE verifier)."""
    metadata = metadata_get(provider)
    if "token_endpoint" not in metadata:
        raise ProviderUnavailable(f"{provider.name} has no token endpoint")
    with _oauth_session(provider, metadata, redirect_uri) as session:
        try:
            token = session.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                timeout=settings.OIDC_HTTP_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{provider.name}: token endpoint: {exc}") from None
        except (OAuthError, ValueError) as exc:  # the provider refused the code or the verifier
            raise IdTokenRejected(f"the token endpoint refused the code: {exc}") from None
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise IdTokenRejected("the token response has no id_token")
    return id_token
