"""The request type of API views behind DRF's default permission (`IsAuthenticated`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request

if TYPE_CHECKING:

    class AuthenticatedRequest(Request):
        """`request.user` is a `User`, never anonymous: the permission check ran before the view."""

        from accounts.models import User

        user: User

else:
    AuthenticatedRequest = Request
