"""Site wiring: static files without a thread hop for every other request.

`WhiteNoiseMiddleware` is sync only, so in Django's async stack every request (the API's too) was
adapted through it: event loop -> thread -> event loop. This async middleware looks at the path
first and lets WhiteNoise (in a thread: it may touch the disk) handle only `STATIC_URL`; every
other request goes straight on, on the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.prefix = "/" + settings.STATIC_URL.lstrip("/")
        # WhiteNoise answers what it has and hands everything else under the prefix to a 404.
        self.whitenoise = WhiteNoiseMiddleware(get_response=lambda request: HttpResponseNotFound())
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.prefix):
            return await sync_to_async(self.whitenoise, thread_sensitive=False)(request)
        return await self.get_response(request)
