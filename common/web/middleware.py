"""Site wiring: the API's request path without a thread hop per middleware.

Django runs a `MiddlewareMixin` middleware in an async stack by sending each of its
`process_request` and `process_response` through `sync_to_async`: with the seven middleware of
the admin site that is about a dozen event loop -> thread -> event loop hops for every request,
most of what an API request cost. So the site has two stacks (`cortex_site.asgi`):
- the API (token-authenticated, stateless JSON) runs `API_MIDDLEWARE`: async-only middleware;
- the admin and the docs (sessions, CSRF, messages) keep Django's full `MIDDLEWARE`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.middleware.security import SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponse]]


class StaticFilesMiddleware:
    """WhiteNoise for `STATIC_URL` only: it is sync only, so every other request goes straight on."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.prefix = "/" + settings.STATIC_URL.lstrip("/")
        # WhiteNoise answers what it has and hands everything else under the prefix to a 404.
        self.whitenoise = WhiteNoiseMiddleware(get_response=lambda request: HttpResponseNotFound())
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.prefix):
            return await sync_to_async(self.whitenoise, thread_sensitive=False)(request)
        return await self.get_response(request)


class ApiSecurityMiddleware:
    """Django's `SecurityMiddleware` (HTTPS redirect, nosniff, referrer and opener policies) run on
    the event loop: its hooks only read settings and set headers."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.inner = SecurityMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        redirect = self.inner.process_request(request)
        response = redirect if redirect is not None else await self.get_response(request)
        return self.inner.process_response(request, response)
