"""How an expert checks the tokens the core mints for it (the MCP SDK's `TokenVerifier`).

A token is accepted only if its signature verifies with a key the core publishes at its JWKS URL
(fetched and cached by `kid`; an unknown `kid` refetches, so a rotated key works at once), its
algorithm is EdDSA, its issuer is the core, its audience is one of this expert's own URLs (a token
minted for another expert is refused), it has not expired and lives at most 5 minutes, and it
names a user (`sub`), a workspace and a tool.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import jwt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier

from common.errors import CortexError, ErrorCode

logger = logging.getLogger(__name__)

MAX_LIFETIME_SECONDS = 300
REQUIRED = ["iss", "aud", "sub", "exp", "iat", "jti", "workspace_id", "tool"]


class CoreTokenVerifier(TokenVerifier):
    def __init__(self, *, jwks_url: str, issuer: str, audiences: list[str]) -> None:
        self.issuer = issuer
        self.audiences = audiences
        # Keys cached by kid for 5 minutes; an unknown kid makes one refetch (PyJWKClient's own rule).
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "EdDSA" or not header.get("kid"):
                return None
            key = await asyncio.to_thread(self._jwks.get_signing_key, header["kid"])
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["EdDSA"],
                audience=self.audiences,
                issuer=self.issuer,
                options={"require": REQUIRED},
            )
            if int(claims["exp"]) - int(claims["iat"]) > MAX_LIFETIME_SECONDS:
                return None
            uuid.UUID(str(claims["sub"]))
            uuid.UUID(str(claims["workspace_id"]))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            logger.info("refused a token: %s", type(exc).__name__)
            return None
        return AccessToken(
            token=str(claims["jti"]),
            client_id=str(claims["iss"]),
            scopes=[],
            expires_at=int(claims["exp"]),
            subject=str(claims["sub"]),
            claims=claims,
        )


def caller_for(tool: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Inside a tool: (workspace_id, user_id) from the caller's token, which must name this tool."""
    token = get_access_token()
    claims = token.claims if token is not None else None
    if not claims:
        raise CortexError(ErrorCode.NOT_AUTHENTICATED, "A token from the core is required.")
    if claims.get("tool") != tool:
        raise CortexError(
            ErrorCode.PERMISSION_DENIED, f"This token was minted for {claims.get('tool')!r}, not {tool!r}."
        )
    return uuid.UUID(str(claims["workspace_id"])), uuid.UUID(str(claims["sub"]))
