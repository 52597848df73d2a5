"""What API views share: `validated` input, and `AsyncAPIView`, a DRF view whose handlers run on the
event loop (the API's hot paths)."""

from __future__ import annotations

import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions, serializers
from rest_framework.views import APIView


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

    async def _adispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
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
