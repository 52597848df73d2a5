"""What API views share: `validated` input, and `AsyncAPIView`, a DRF view whose handlers run on the
event loop (the API's hot paths)."""

from __future__ import annotations

import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

# What the lean path serves (else DRF's full path answers): a JSON body (DRF's parser is JSON
# only; a charset other than UTF-8 goes to it) and an `Accept` that picks DRF's JSON renderer
# with no media type parameters (`; indent=4` changes DRF's output).
LEAN_CONTENT_TYPES = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)
LEAN_ACCEPT = frozenset({None, "*/*", "application/json"})
_renderer = JSONRenderer()


def validated(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> dict:
    """The input serializer's validated data, or DRF's ValidationError (a 400 envelope)."""
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class AsyncAPIView(APIView):
    """A DRF view whose handlers are coroutines, run on the event loop with no thread hop.

    DRF 3.18's `APIView` is sync only. adrf's async `APIView` still runs DRF's `initial()`
    (authentication, permissions, throttles) in a worker thread for every request, and Django then
    renders a DRF `Response` in another (`sync_to_async(response.render)`): two event loop ->
    thread -> event loop hops per request, the cost the input path's profile was made of. Here:
    - authentication awaits the authenticator's `aauthenticate` (`CachedJWTAuthentication`: the
      token is checked on the loop, and only a user-cache miss reaches the database);
    - permissions and throttles are DRF's own checks, run on the loop (they do CPU and cache work;
      the cache is in-process, or Redis when several processes share it);
    - the response is rendered here and handed to Django as a plain `HttpResponse`.
    Errors go through the one exception handler, as in any DRF view.
    """

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return self._adispatch(request, *args, **kwargs)

    async def lean(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        """A view's common request served without DRF's request machinery (override it).

        None: not served here, and nothing was done (no throttle counted, nothing written): DRF's
        full path then runs and gives the same answer it always gave, errors included. So the lean
        path only has to be right about what it accepts: everything it is unsure of is DRF's.
        """
        return None

    async def _adispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        lean = await self.lean(request, *args, **kwargs)
        if lean is not None:
            return lean
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        try:
            await self._aauthenticate(drf_request)
            self.initial(drf_request, *args, **kwargs)  # the user is known: no authentication here
            method = (drf_request.method or "").lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                handler = self.http_method_not_allowed
            response = handler(drf_request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:  # noqa: BLE001 - as DRF's dispatch: every error through the one handler
            response = self.handle_exception(exc)
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        self.response.render()
        plain = HttpResponse(self.response.content, status=self.response.status_code)
        for name, value in self.response.items():
            plain[name] = value
        return plain

    @staticmethod
    async def _aauthenticate(request: Any) -> None:  # a DRF Request; its private API, as DRF uses it
        # DRF's `Request._authenticate`, awaiting authenticators that can (all of ours can).
        for authenticator in request.authenticators:
            try:
                if hasattr(authenticator, "aauthenticate"):
                    result = await authenticator.aauthenticate(request)
                else:
                    result = await sync_to_async(authenticator.authenticate)(request)
            except exceptions.APIException:
                request._not_authenticated()
                raise
            if result is not None:
                request._authenticator = authenticator
                request.user, request.auth = result
                return
        request._not_authenticated()

    # --- the lean path's parts: each one DRF's own check, on the plain Django request

    def lean_serves(self, request: HttpRequest) -> bool:
        """A request DRF's content negotiation would answer as JSON, with a JSON body, and a view
        whose policies the lean path reproduces exactly: `IsAuthenticated`, at most one throttle
        (DRF counts every throttle even when one refuses: with two, a fallback would count twice)."""
        meta = request.META
        return (
            meta.get("CONTENT_TYPE") in LEAN_CONTENT_TYPES
            and meta.get("HTTP_ACCEPT") in LEAN_ACCEPT
            and not meta.get("QUERY_STRING")  # `?format=` picks a renderer
            and all(permission is IsAuthenticated for permission in self.permission_classes)
            and len(self.throttle_classes) <= 1
        )

    async def lean_user(self, request: HttpRequest) -> Any:
        """The user DRF's authentication would find (and `IsAuthenticated` let through), or None:
        no credentials, refused ones, or an authenticator without `aauthenticate`."""
        for authenticator in self.get_authenticators():
            if not hasattr(authenticator, "aauthenticate"):
                return None
            try:
                result = await authenticator.aauthenticate(request)
            except Exception:  # noqa: BLE001 - refused (or failed): DRF's path answers it, with its envelope
                return None
            if result is not None:
                user = result[0]
                if not (user and user.is_authenticated):
                    return None
                request.user = user  # as DRF's `Request.user` setter does
                return user
        return None

    def lean_throttled(self, request: HttpRequest) -> bool:
        """Whether a throttle refuses (then DRF's path answers the 429: a refusal counts nothing);
        an allowed request is counted, as in DRF's `check_throttles`."""
        # A plain request: the throttles read only `user` (set by `lean_user`), `META` and `method`.
        plain: Any = request
        return any(not throttle.allow_request(plain, self) for throttle in self.get_throttles())

    def lean_response(self, data: Any, status: int = 200) -> HttpResponse:
        """What DRF's `Response(data)` becomes through `finalize_response` and `_adispatch`: the
        same JSON bytes (DRF's renderer), content type and `Allow` header."""
        response = HttpResponse(_renderer.render(data), status=status, content_type="application/json")
        for name, value in self.default_response_headers.items():
            response[name] = value
        return response

    async def lean_error(self, request: HttpRequest, user: Any, exc: Exception) -> HttpResponse:
        """An error after the lean path acted (the write refused the input): through DRF's handler
        and response path, as any error of the view."""
        drf_request = self.initialize_request(request, *self.args, **self.kwargs)
        drf_request.user = user
        self.request = drf_request
        self.headers = self.default_response_headers
        self.response = self.finalize_response(drf_request, self.handle_exception(exc), *self.args, **self.kwargs)
        self.response.render()
        plain = HttpResponse(self.response.content, status=self.response.status_code)
        for name, value in self.response.items():
            plain[name] = value
        return plain
