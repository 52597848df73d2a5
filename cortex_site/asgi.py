"""ASGI entry point: Channels' router in front of Django.

HTTP paths owned by `streaming` (the SSE stream) go to Channels consumers; everything else is
plain Django. WebSocket connections go through `streaming.routing.websocket_application`, which
checks the origin before any consumer runs.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from common.asgi import ObservedApp  # noqa: E402
from streaming.routing import http_urlpatterns, websocket_application, websocket_urlpatterns  # noqa: E402

# Outermost: the request id, the access log line and the metrics of every request and stream.
application = ObservedApp(
    ProtocolTypeRouter(
        {
            "http": URLRouter([*http_urlpatterns, re_path(r"", django_asgi_app)]),  # type: ignore[arg-type]
            "websocket": websocket_application,
        }
    ),
    routes=[f"/{pattern.pattern}" for pattern in [*http_urlpatterns, *websocket_urlpatterns]],
    access_log=settings.ACCESS_LOG,
)
