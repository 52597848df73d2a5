"""Our refresh token: simplejwt's, plus a family claim, checked without a database write.

- `fam` names the login the token descends from (`RefreshTokenFamily`); rotation copies it.
- `auth_time` is when that login happened (password, provider exchange, login code), in both
  tokens; rotation copies it too, so a refreshed token is no proof of a recent sign-in.
- Decoding checks signature, expiry, issuer/audience and type only. The blacklist, the family and
  the password are checked by `accounts.services` with reads, so a bad token costs no write.
- The outstanding-token row keeps only the `jti`: a database or admin reader gets no usable token.
"""

from __future__ import annotations

from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch

FAMILY_CLAIM = "fam"
AUTH_TIME_CLAIM = "auth_time"  # OIDC's name: when the person last signed in (a refresh copies it)
NOT_STORED = "(not stored)"


class FamilyRefreshToken(RefreshToken):
    def verify(self, *args, **kwargs) -> None:
        Token.verify(self, *args, **kwargs)  # not BlacklistMixin.verify: the service reads the blacklist

    @classmethod
    def for_user(cls, user, *, family_id) -> FamilyRefreshToken:  # type: ignore[override]
        token = Token.for_user.__func__(cls, user)  # type: ignore[attr-defined]  # skip BlacklistMixin.for_user, which stores the token
        token[FAMILY_CLAIM] = str(family_id)
        OutstandingToken.objects.create(
            user=user,
            jti=token[api_settings.JTI_CLAIM],
            token=NOT_STORED,
            created_at=token.current_time,
            expires_at=datetime_from_epoch(token["exp"]),
        )
        return token
