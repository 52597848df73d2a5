"""A small, real OpenID provider on loopback for the tests, with keys the tests make.

It serves, over HTTP on 127.0.0.1, three discovery documents shaped like the providers Cortex
meets, all signing with the provider's current key (`rotate()` adds a new one):

- `generic`: issuer `<base>/generic`, as any OpenID provider (RS256, PS256, ES256, EdDSA);
- `entra`: an Entra ID multi-tenant document at `<base>/entra/organizations/v2.0`, whose issuer is
  the template `<base>/entra/{tenantid}/v2.0`;
- `b2c`: a B2C user flow's document at `<base>/b2c/contoso.onmicrosoft.com/B2C_1_signin/v2.0`,
  whose issuer names the tenant id instead (`<base>/b2c/<tenant id>/v2.0/`).

The `generic` issuer also has an authorization endpoint (which signs `self.user` in at once, as
a provider with a remembered session and consent does) and a token endpoint that checks the
client, the redirect URI and the PKCE (S256) verifier, and redeems each code once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ENTRA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
B2C_TENANT = "775527ff-9a37-4307-8b3d-cc311f58d925"
CLIENT_ID = "cortex-test-client"
CLIENT_SECRET = "cortex-test-secret"


@dataclass
class Key:
    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        public = json.loads(algorithm.to_jwk(self.private.public_key()))  # type: ignore[attr-defined]
        return {**public, "kid": self.kid, "use": "sig"}


def make_key(kid: str, alg: str = "RS256") -> Key:
    if alg.startswith(("RS", "PS")):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    return Key(kid=kid, alg=alg, private=private)


class OidcProvider:
    def __init__(self) -> None:
        self.keys: list[Key] = [make_key("key-1")]
        self.jwks_fetches: Counter[str] = Counter()
        self.codes: dict[str, dict[str, Any]] = {}
        self.user: dict[str, Any] = {"sub": "user-1", "email": "user-1@example.com", "email_verified": True}
        self.id_token_overrides: dict[str, Any] = {}
        self.token_requests: list[dict[str, list[str]]] = []
        # When set, /authorize answers 200 and keeps the redirect back here instead of sending it.
        self.hold_redirects = False
        self.held: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Issuers as an operator configures them (the discovery document lives below each).
    @property
    def generic(self) -> str:
        return f"{self.base}/generic"

    @property
    def entra_authority(self) -> str:
        return f"{self.base}/entra/organizations/v2.0"

    def entra_issuer(self, tenant: str = ENTRA_TENANT) -> str:
        return f"{self.base}/entra/{tenant}/v2.0"

    @property
    def b2c_authority(self) -> str:
        return f"{self.base}/b2c/contoso.onmicrosoft.com/B2C_1_signin/v2.0"

    @property
    def b2c_issuer(self) -> str:
        return f"{self.base}/b2c/{B2C_TENANT}/v2.0/"

    def rotate(self, alg: str = "RS256") -> Key:
        """A new signing key, published from now on (the old one stays published too)."""
        with self._lock:
            key = make_key(f"key-{len(self.keys) + 1}", alg)
            self.keys.append(key)
            return key

    @property
    def signing_key(self) -> Key:
        return self.keys[-1]

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        issuer: str | None = None,
        key: Key | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """An ID token for `CLIENT_ID` (the generic issuer unless told), valid for 5 minutes."""
        now = int(time.time())
        key = key or self.signing_key
        payload = {
            "iss": issuer or self.generic,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            **self.user,
            **(claims or {}),
            **overrides,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})})

    def discovery(self, name: str) -> dict[str, Any] | None:
        generic = {
            "issuer": self.generic,
            "authorization_endpoint": f"{self.generic}/authorize",
            "token_endpoint": f"{self.generic}/token",
            "jwks_uri": f"{self.generic}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }
        microsoft = {
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
        }
        documents = {
            "generic": generic,
            "entra/organizations/v2.0": {
                **microsoft,
                "issuer": f"{self.base}/entra/{{tenantid}}/v2.0",
                "authorization_endpoint": f"{self.base}/entra/organizations/oauth2/v2.0/authorize",
                "token_endpoint": f"{self.base}/entra/organizations/oauth2/v2.0/token",
                "jwks_uri": f"{self.base}/entra/discovery/v2.0/keys",
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
            },
            "b2c/contoso.onmicrosoft.com/B2C_1_signin/v2.0": {
                **microsoft,
                "issuer": self.b2c_issuer,
                "authorization_endpoint": f"{self.base}/b2c/contoso.onmicrosoft.com/b2c_1_signin/oauth2/v2.0/authorize",
                "token_endpoint": f"{self.base}/b2c/contoso.onmicrosoft.com/b2c_1_signin/oauth2/v2.0/token",
                "jwks_uri": f"{self.base}/b2c/contoso.onmicrosoft.com/b2c_1_signin/discovery/v2.0/keys",
                "claims_supported": ["name", "emails", "sub", "tfp", "iss", "iat", "exp", "aud", "nonce"],
            },
        }
        return documents.get(name)

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.jwk for key in self.keys]}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str]]:
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != CLIENT_ID or not redirect_uri:
            return 400, {}
        answer: dict[str, str] = {"state": query.get("state", "")}
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            answer["error"] = "invalid_request"
        else:
            code = secrets.token_urlsafe(24)
            self.codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": query.get("code_challenge", ""),
                "nonce": query.get("nonce"),
                "user": dict(self.user),
            }
            answer["code"] = code
        return 302, {"Location": f"{redirect_uri}?{urlencode(answer)}"}

    def token(self, form: dict[str, list[str]], authorization: str) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        client_id, secret = (form.get("client_id", [""])[0], form.get("client_secret", [""])[0])
        if authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", [""])[0], None)  # a code is redeemed once
        if grant is None or form.get("redirect_uri", [""])[0] != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", [""])[0].encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if not verifier or challenge != grant["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        id_token = self.mint(grant["user"], **{"nonce": grant["nonce"], **self.id_token_overrides})
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }


def _handler(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path.strip("/")
            if path.endswith("/.well-known/openid-configuration"):
                document = provider.discovery(path.removesuffix("/.well-known/openid-configuration"))
                return self._json(200, document) if document else self._json(404, {})
            if path.endswith(("/jwks", "/keys")):
                provider.jwks_fetches[path] += 1
                return self._json(200, provider.jwks())
            if path == "generic/authorize":
                status, headers = provider.authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
                if provider.hold_redirects and "Location" in headers:
                    provider.held.append(headers["Location"])
                    return self._json(200, {"held": True})
                return self._json(status, {}, headers)
            return self._json(404, {})

        def do_POST(self) -> None:
            if urlsplit(self.path).path.strip("/") != "generic/token":
                return self._json(404, {})
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            status, answer = provider.token(parse_qs(body), self.headers.get("Authorization", ""))
            return self._json(status, answer, {"Cache-Control": "no-store"})

    return Handler


def providers_setting(idp: OidcProvider, *, name: str = "corp", provision: str = "auto") -> str:
    """`OIDC_PROVIDERS` for a core process: one generic provider served by `idp`."""
    entry = {"name": name, "issuer": idp.generic, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return json.dumps([{**entry, "provision": provision}])
