"""Who opens a stream: `Authorization: Bearer <access JWT>` or a single-use `?ticket=`.

The token is checked by simplejwt's own machinery (signature, expiry, issuer/audience, revocation,
active user), the same as the REST API. A JWT in the URL is refused outright: URLs end up in logs,
proxies and browser history, which is what tickets exist to avoid.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.authentication import CachedJWTAuthentication
from accounts.models import User
from common.errors import CortexError, ErrorCode
from streaming import services

URL_TOKEN_PARAMS = ("token", "access_token", "jwt", "authorization")


async def _user_for_header(header: bytes) -> User:
    authentication = CachedJWTAuthentication()
    try:
        raw = authentication.get_raw_token(header)
        if raw is None:
            raise CortexError(ErrorCode.INVALID_TOKEN, "The Authorization header must be 'Bearer <token>'.")
        return await authentication.aget_user(authentication.get_validated_token(raw))
    except (InvalidToken, TokenError, AuthenticationFailed):
        raise CortexError(ErrorCode.INVALID_TOKEN, "The token is invalid or expired.") from None


def _user_for_ticket(ticket: str) -> User:
    user = services.ticket_consume(ticket=ticket)
    if user is None:
        raise CortexError(ErrorCode.INVALID_TOKEN, "The ticket is invalid, expired or already used.")
    return user


async def stream_user(*, headers: dict[bytes, bytes], query: dict[str, list[str]]) -> User:
    if any(name in query for name in URL_TOKEN_PARAMS):
        raise CortexError(
            ErrorCode.TOKEN_IN_URL, "Access tokens are not accepted in URLs; use the Authorization header or a ticket."
        )
    header = headers.get(b"authorization")
    if header:
        return await _user_for_header(header)
    tickets = query.get("ticket")
    if tickets:
        return await database_sync_to_async(_user_for_ticket)(tickets[0])
    raise CortexError(ErrorCode.NOT_AUTHENTICATED, "Authentication credentials were not provided.")
