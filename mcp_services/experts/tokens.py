"""Tokens the core mints for each call to an expert, and the public keys that verify them.

A call carries `Authorization: Bearer <JWT>` minted for that one call: `iss` the core, `aud` the
expert's URL (a token for one expert is refused by another), `sub` the user, `workspace_id`, `tool`
(`tools/list` for discovery), `iat`, `exp` (at most 5 minutes) and a `jti`. It is signed with an
Ed25519 key (EdDSA) whose `kid` is in the header; the public halves are served at
`/.well-known/jwks.json`. The user's own access token never leaves the core.

Keys (`EXPERT_SIGNING_KEYS`): PEM files or PEM text; the first signs, all are published, so a new
key can be published before it signs and an old one kept until its last tokens expire. In debug
mode with none configured, one is generated once and kept in `var/` (never outside debug: there
is no default key, and a `core_token` call then fails with `service_unavailable`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from common.errors import CortexError, ErrorCode

logger = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
DISCOVERY_TOOL = "tools/list"  # the `tool` claim of a discovery call (no tool name contains "/")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    def public_jwk(self) -> dict[str, str]:
        return {**_okp(self.private_key.public_key()), "kid": self.kid, "use": "sig", "alg": ALGORITHM}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _okp(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}


def _thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: the same key always gets the same `kid`, in every process."""
    canonical = json.dumps(_okp(public_key), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())[:16]


def _pem_texts(entries: list[str]) -> list[bytes]:
    texts: list[bytes] = []
    for entry in entries:
        text = entry if "-----BEGIN" in entry else Path(entry).expanduser().read_text()
        # One entry may hold several PEM blocks (e.g. the environment's PEM text with both keys).
        for block in text.split("-----BEGIN")[1:]:
            texts.append(("-----BEGIN" + block).strip().encode())
    return texts


def _load(pem: bytes) -> SigningKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(
            "EXPERT_SIGNING_KEYS must be Ed25519 private keys (openssl genpkey -algorithm ed25519)."
        )
    return SigningKey(kid=_thumbprint(key.public_key()), private_key=key)


def generate_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


_debug_key_lock = threading.Lock()


def _debug_key(path: Path) -> bytes:
    with _debug_key_lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # O_EXCL: two processes starting together keep one key, the first one written
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as file:
                    file.write(generate_pem())
                logger.warning(
                    "Generated the debug-only expert signing key %s (set EXPERT_SIGNING_KEYS outside debug)", path
                )
        return path.read_bytes()


@functools.cache
def _keys_for(entries: tuple[str, ...], debug_key_path: Path | None) -> tuple[SigningKey, ...]:
    if entries:
        pems = _pem_texts(list(entries))
        if not pems:
            raise ImproperlyConfigured("EXPERT_SIGNING_KEYS holds no PEM key.")
        return tuple(_load(pem) for pem in pems)
    if debug_key_path is not None:
        return (_load(_debug_key(debug_key_path)),)
    return ()


def signing_keys() -> tuple[SigningKey, ...]:
    """The configured keys, first the one that signs (empty: none configured outside debug)."""
    debug_key_path = Path(settings.EXPERT_DEBUG_KEY_PATH) if settings.DEBUG else None
    return _keys_for(tuple(settings.EXPERT_SIGNING_KEYS), debug_key_path)


def jwks() -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in signing_keys()]}


def unconfigured_reason() -> str | None:
    """Why tokens cannot be minted, or None when they can."""
    try:
        return (
            None if signing_keys() else "EXPERT_SIGNING_KEYS is not set: experts with auth core_token cannot be called"
        )
    except (ImproperlyConfigured, OSError, ValueError) as exc:
        return f"EXPERT_SIGNING_KEYS is unusable: {exc}"


def expert_token_mint(*, audience: str, user_id: uuid.UUID, workspace_id: uuid.UUID, tool: str) -> str:
    """A JWT for one call to the expert at `audience`, signed with the first key."""
    reason = unconfigured_reason()
    if reason is not None:
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, f"Experts cannot be called: {reason}.")
    key = signing_keys()[0]
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": audience,
        "sub": str(user_id),
        "workspace_id": str(workspace_id),
        "tool": tool,
        "iat": now,
        "exp": now + min(int(settings.EXPERT_TOKEN_SECONDS), 300),
        "jti": uuid.uuid4().hex,
    }
    import jwt  # here: every Django process checks its keys at start (checks.warn_at_startup); few mint

    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})
