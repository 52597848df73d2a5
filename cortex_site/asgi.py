"""ASGI entry point: Channels' router in front of Django.

HTTP paths owned by `streaming` (the SSE stream) go to Channels consumers; the API's paths go to
`ApiASGIHandler` (Django with the API's async-only middleware, see `cortex_site.middleware`);
everything else (admin, docs, unknown paths) to Django with the full middleware. WebSocket
connections go through `streaming.routing.websocket_application`, which checks the origin before
any consumer runs.
"""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
django_asgi_app = get_asgi_application()

from asgiref.sync import ThreadSensitiveContext, sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import ImproperlyConfigured, RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import re_path, set_script_prefix  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from common.asgi import ObservedApp  # noqa: E402
from streaming.routing import http_urlpatterns, websocket_application, websocket_urlpatterns  # noqa: E402

# Idle per-request sync threads kept for reuse (more are made, and dropped, under bursts).
SYNC_THREADS_KEPT = 32


class _SyncThread(ThreadPoolExecutor):
    """One request's sync thread (reused across requests); remembers whether anything ran on it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="cortex-api")
        self.used = False

    def submit(self, *args, **kwargs):
        self.used = True
        return super().submit(*args, **kwargs)


class _RequestProcessed(Exception):
    pass


class ApiASGIHandler(ASGIHandler):
    """Django for the API, without thread hops a request does not need.

    - Middleware: `API_MIDDLEWARE`, async only (Django sends every hook of a sync-capable
      middleware through `sync_to_async`).
    - Sync code of a request (sync views, the async ORM) runs on a reused thread instead of a new
      one per request (`ThreadSensitiveContext` with a pooled executor).
    - Django's request signals exist to close the database connections of the request's sync
      thread. `request_started` is not sent (the previous request on the thread closed them at its
      end); `request_finished` (`response.close()`) runs on that thread when the request used it,
      and on the event loop when it did not, where it has nothing to close: an async view that
      never left the loop (POST /input) costs no hop at all.
    The rest (body, request, disconnect, response) is Django's `ASGIHandler.handle`.
    """

    def __init__(self) -> None:
        self._idle: list[_SyncThread] = []
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(settings.API_MIDDLEWARE):
            middleware = import_string(path)
            if getattr(middleware, "sync_capable", True) or not getattr(middleware, "async_capable", False):
                raise ImproperlyConfigured(f"API_MIDDLEWARE must be async-only middleware: {path} is not")
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle.pop() if self._idle else _SyncThread()
        thread.used = False
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self._handle(scope, receive, send, thread)
        finally:
            if len(self._idle) < SYNC_THREADS_KEPT:
                self._idle.append(thread)
            else:
                thread.shutdown(wait=False)

    async def _handle(self, scope, receive, send, thread: _SyncThread) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(response, send)  # type: ignore[arg-type]  # the error response
            else:
                response = None
                try:
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self.listen_for_disconnect(receive))
                            response = await self.run_get_response(request)
                            await self.send_response(response, send)
                            raise _RequestProcessed
                    except* (_RequestProcessed, RequestAborted):
                        pass
                except BaseExceptionGroup as group:
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            finish = response.close if response is not None else self._request_finished
            if thread.used:
                await sync_to_async(finish)()
            else:
                finish()

    def _request_finished(self) -> None:
        signals.request_finished.send(sender=self.__class__)


api_asgi_app = ApiASGIHandler()
API_PATHS = (
    r"^(auth/|config/|input$|messages$|context$|output/ticket$|internal/events$|healthz$|readyz$|openapi\.json$)"
)

# Outermost: the request id, the access log line and the metrics of every request and stream.
application = ObservedApp(
    ProtocolTypeRouter(
        {
            "http": URLRouter(
                [*http_urlpatterns, re_path(API_PATHS, api_asgi_app), re_path(r"", django_asgi_app)]  # type: ignore[arg-type]
            ),
            "websocket": websocket_application,
        }
    ),
    routes=[f"/{pattern.pattern}" for pattern in [*http_urlpatterns, *websocket_urlpatterns]],
    access_log=settings.ACCESS_LOG,
)
