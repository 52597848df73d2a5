"""Who opens a stream: `Authorization: Bearer <access JWT>`, a single-use `?ticket=`, or the
browser's stream cookie (set with each ticket; used when there is no ticket or it is spent, which
is what EventSource's built-in reconnect brings).

The token is checked by simplejwt's own machinery (signature, expiry, issuer/audience, revocation,
active user), the same as the REST API. A JWT in the URL is refused outright: URLs end up in logs,
proxies and browser history, which is what tickets exist to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.http.cookie import parse_cookie
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.authentication import CachedJWTAuthentication
from accounts.models import User
from common.db import db_call
from common.errors import CortexError, ErrorCode
from streaming import services

URL_TOKEN_PARAMS = ("token", "access_token", "jwt", "authorization")


@dataclass(frozen=True)
class StreamCredential:
    user: User
    # The stream ends at this moment: the access token's expiry (for a ticket, the expiry of the
    # access token that requested it).
    expires_at: datetime
    # When the credential was issued: a logout or password change after it ends the stream. An
    # access token's `iat` has whole seconds: it counts as issued at the end of its second, so a
    # login just after a logout is never taken for one before it.
    issued_at: datetime


async def _user_for_header(header: bytes) -> StreamCredential:
    authentication = CachedJWTAuthentication()
    try:
        raw = authentication.get_raw_token(header)
        if raw is None:
            raise CortexError(ErrorCode.INVALID_TOKEN, "The Authorization header must be 'Bearer <token>'.")
        token = authentication.get_validated_token(raw)
        user = await authentication.aget_user(token)
    except (InvalidToken, TokenError, AuthenticationFailed):
        raise CortexError(ErrorCode.INVALID_TOKEN, "The token is invalid or expired.") from None
    return StreamCredential(
        user=user,
        expires_at=datetime.fromtimestamp(token["exp"], tz=UTC),
        issued_at=datetime.fromtimestamp(int(token.get("iat", 0)) + 1, tz=UTC),
    )


def _user_for_ticket(ticket: str) -> StreamCredential:
    record = services.ticket_consume(ticket=ticket)
    if record is None:
        raise CortexError(ErrorCode.INVALID_TOKEN, "The ticket is invalid, expired or already used.")
    expires_at = record.credential_expires_at or (timezone.now() + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"])
    return StreamCredential(user=record.user, expires_at=expires_at, issued_at=record.created_at)


async def stream_user(*, headers: dict[bytes, bytes], query: dict[str, list[str]]) -> StreamCredential:
    if any(name in query for name in URL_TOKEN_PARAMS):
        raise CortexError(
            ErrorCode.TOKEN_IN_URL, "Access tokens are not accepted in URLs; use the Authorization header or a ticket."
        )
    header = headers.get(b"authorization")
    if header:
        return await _user_for_header(header)
    tickets = query.get("ticket")
    cookie = parse_cookie(headers.get(b"cookie", b"").decode("latin-1")).get(services.STREAM_COOKIE)
    if tickets:
        try:
            return await db_call(_user_for_ticket)(tickets[0])
        except CortexError:
            if not cookie:
                raise
    if cookie:
        return await db_call(_user_for_cookie)(cookie)
    raise CortexError(ErrorCode.NOT_AUTHENTICATED, "Authentication credentials were not provided.")


def _user_for_cookie(value: str) -> StreamCredential:
    found = services.stream_cookie_user(value=value)
    if found is None:
        raise CortexError(ErrorCode.INVALID_TOKEN, "The stream cookie is invalid or expired; get a new ticket.")
    user, expires_at, issued_at = found
    return StreamCredential(user=user, expires_at=expires_at, issued_at=issued_at)
