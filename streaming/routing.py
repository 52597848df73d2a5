"""Channels routes of the streaming app; `cortex_site.asgi` mounts them."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from common.web import daphne_compat
from streaming.consumers import EventSocketConsumer, EventStreamConsumer

daphne_compat.install()


class StreamOriginValidator(OriginValidator):
    """Browsers must come from an allowed host or `WS_ALLOWED_ORIGINS`.

    A handshake without `Origin` is not from a browser (browsers always send it on WebSockets),
    so cross-site WebSocket hijacking cannot apply; such API clients authenticate with a bearer
    token or ticket like any other, and are let through.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def allowed_origins() -> list[str]:
    return [*settings.ALLOWED_HOSTS, *settings.CORTEX["WS_ALLOWED_ORIGINS"]]


http_urlpatterns: list = [path("output/stream", EventStreamConsumer.as_asgi(), name="output-stream")]
websocket_urlpatterns: list = [path("output/ws", EventSocketConsumer.as_asgi(), name="output-ws")]

websocket_application = StreamOriginValidator(URLRouter(websocket_urlpatterns), allowed_origins())
