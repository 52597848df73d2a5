"""Request-rate throttles keyed by who is really asking.

DRF's own `get_ident` believes `X-Forwarded-For` when `NUM_PROXIES` is unset, so a client could
pick a fresh identity per request; these use `accounts.limits.client_address` instead.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.exceptions import TokenError

from accounts import limits
from accounts.tokens import FamilyRefreshToken


class AddressRateThrottle(ScopedRateThrottle):
    """Per client address (login: everyone behind one address shares this generous bucket)."""

    def get_ident(self, request: Request) -> str:
        return limits.client_address(request._request)


class RefreshRateThrottle(AddressRateThrottle):
    """Refresh and logout: per user (the validly signed token's `oid`), so an office behind one
    address does not share a bucket; a token that names nobody falls back to the address."""

    scope_attr = "throttle_scope"

    def get_cache_key(self, request: Request, view) -> str | None:
        raw = request.data.get("refresh_token") if hasattr(request, "data") and isinstance(request.data, dict) else None
        if isinstance(raw, str) and len(raw) <= 4096:
            try:
                user_id = FamilyRefreshToken(raw).get("oid")  # signature and expiry only: no database
            except TokenError:
                user_id = None
            if user_id:
                return self.cache_format % {"scope": self.scope, "ident": f"user:{user_id}"}
        return self.cache_format % {"scope": self.scope, "ident": f"address:{self.get_ident(request)}"}
