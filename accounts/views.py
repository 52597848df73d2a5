from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import audit
from accounts import limits
from accounts.models import User
from accounts.serializers import (
    LoginInputSerializer,
    RefreshInputSerializer,
    TokenPairSerializer,
    VerifyOutputSerializer,
)
from accounts.services import InvalidRefreshToken, refresh_token_revoke, token_pair_issue, token_pair_refresh
from accounts.throttles import RefreshRateThrottle
from common.web.addresses import client_address
from common.web.parsers import BoundedJSONParser
from common.web.throttles import AddressRateThrottle


class _PublicAuthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [RefreshRateThrottle]
    throttle_scope = "refresh"

    def get_authenticate_header(self, request: Request) -> str:
        # Without authentication classes DRF would turn our 401s into 403s.
        return 'Bearer realm="api"'


def _with_refresh_token(request: Request, action):
    data = RefreshInputSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        return action(refresh_token=data.validated_data["refresh_token"], ip=client_address(request._request))
    except InvalidRefreshToken:
        raise AuthenticationFailed(
            "The refresh token is invalid, expired or revoked.", code="invalid_refresh_token"
        ) from None


class LoginApi(_PublicAuthView):
    parser_classes = [BoundedJSONParser, FormParser]
    throttle_classes = [AddressRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=LoginInputSerializer, responses={200: TokenPairSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = LoginInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        retry_after = getattr(request._request, "login_retry_after", None)
        if retry_after is not None:  # too many failures for this account or address (accounts.limits)
            raise Throttled(wait=retry_after)
        address = client_address(request._request)
        if user is None:  # the same answer for an unknown email, a wrong password, an inactive user
            email = data.validated_data["email"]
            known = User.objects.filter(email__iexact=email).values_list("id", flat=True).first()
            # An unknown email is kept as the target: nobody's own record shows it.
            audit.record_refused(
                known, "auth.login_failed", ip=address, target="" if known else email, detail={"method": "password"}
            )
            raise AuthenticationFailed("Incorrect email or password.", code="invalid_credentials")
        with transaction.atomic():
            pair = token_pair_issue(user=user)
            audit.record(user, "auth.login", ip=address, detail={"method": "password"})
        response = Response(pair)
        # This browser has proved it knows the password: its later attempts get their own allowance
        # (accounts.limits). Sent to this path only, read by no script, sent by no other site.
        response.set_cookie(
            limits.DEVICE_COOKIE,
            limits.device_cookie_issue(email=data.validated_data["email"]),
            max_age=settings.LOGIN_DEVICE_COOKIE_DAYS * 86400,
            path=request.path,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Strict",
        )
        return response


class RefreshApi(_PublicAuthView):
    @extend_schema(request=RefreshInputSerializer, responses={200: TokenPairSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        return Response(_with_refresh_token(request, token_pair_refresh))


class LogoutApi(_PublicAuthView):
    @extend_schema(request=RefreshInputSerializer, responses={204: None}, auth=[])
    def post(self, request: Request) -> Response:
        _with_refresh_token(request, refresh_token_revoke)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VerifyApi(APIView):
    @extend_schema(responses={200: VerifyOutputSerializer})
    def get(self, request: Request) -> Response:
        return Response(VerifyOutputSerializer(request.user).data)
