"""The account endpoints' own throttle: refresh and logout are limited per user, not per address."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework_simplejwt.exceptions import TokenError

from accounts.tokens import FamilyRefreshToken
from common.web.throttles import AddressRateThrottle


class RefreshRateThrottle(AddressRateThrottle):
    """Refresh and logout: per user (the validly signed token's `oid`), so an office behind one
    address does not share a bucket; a token that names nobody falls back to the address."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        raw = request.data.get("refresh_token") if isinstance(request.data, dict) else None
        if isinstance(raw, str) and len(raw) <= 4096:
            try:
                user_id = FamilyRefreshToken(raw).get("oid")  # type: ignore[arg-type]  # signature and expiry only: no database
            except TokenError:
                user_id = None
            if user_id:
                return self.cache_format % {"scope": self.scope, "ident": f"user:{user_id}"}
        return self.cache_format % {"scope": self.scope, "ident": f"address:{self.get_ident(request)}"}
