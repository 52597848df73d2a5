"""ASGI entry point: Channels' router in front of Django.

HTTP paths owned by `streaming` (the SSE stream) go to Channels consumers; the API's paths go to
`common.web.asgi.ApiASGIHandler` (Django with the API's async-only middleware, see `common.web.middleware`);
everything else (admin, docs, unknown paths) to Django with the full middleware. WebSocket
connections go through `streaming.routing.websocket_application`, which checks the origin before
any consumer runs. In front of all of them `common.web.asgi.RequestGuard` refuses a foreign `Host`
and a body over the limit before anything reads it, and `common.web.asgi.ObservedApp` gives each
request its id, access log line and metrics. Outermost, `streaming.routing.StreamsFirst` hands a
`GET /output/stream` that the guard would let through straight to the stream, which observes
itself: an idle stream keeps no frame of the layers above it.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from common import tracing  # noqa: E402
from common.web.asgi import ApiASGIHandler, LeanRoutes, ObservedApp, RequestGuard  # noqa: E402
from streaming.routing import (  # noqa: E402
    StreamsFirst,
    http_urlpatterns,
    websocket_application,
    websocket_urlpatterns,
)
from streaming.views import RELAY_MAX_BYTES  # noqa: E402

# A core that delivers memory after each commit (MEMORY_DRAIN_ON_COMMIT, the default, without
# MEMORY_DRAIN_BY_WORKER) calls the memory service over MCP from its first input on: the MCP SDK
# (about a second of CPU, 40% of the core's start) is imported now, before the port opens, not
# beside the first input. Without it (a `memory_outbox_worker` delivers), the core imports the SDK
# when it first calls a service (GET /context, readiness, an expert's discovery), before that call's
# time limit starts (mcp_services.client.call, operations.health.Readiness).
if settings.CORTEX["MEMORY_DRAIN_ON_COMMIT"] and not settings.CORTEX["MEMORY_DRAIN_BY_WORKER"]:
    import mcp  # noqa: F401

api_asgi_app = ApiASGIHandler()
# `POST /input` served from the ASGI scope by its view's lean path, ahead of Channels' URL router
# (common.web.asgi.LeanRoutes); the rest, and whatever the lean path leaves, goes on through it.
lean_routes = ["/input"] if settings.CORTEX["INPUT_ASGI_ROUTE"] else []
API_PATHS = (
    r"^(auth/|config/|input$|messages$|context$|output/ticket$|internal/events$|healthz$|readyz$|openapi\.json$)"
)

# The request id, the access log line and the metrics of every request and stream (ObservedApp);
# then `Host` and the body's size, on every path (common.web.asgi.RequestGuard).
request_guard = RequestGuard(
    ProtocolTypeRouter(
        {
            "http": LeanRoutes(
                URLRouter(
                    [*http_urlpatterns, re_path(API_PATHS, api_asgi_app), re_path(r"", django_asgi_app)]  # type: ignore[arg-type]
                ),
                paths=lean_routes,
            ),
            "websocket": websocket_application,
        }
    ),
    loopback_limits={"/internal/events": RELAY_MAX_BYTES},
)
observed_application = ObservedApp(
    request_guard,
    routes=[f"/{pattern.pattern}" for pattern in [*http_urlpatterns, *websocket_urlpatterns]],
    access_log=settings.ACCESS_LOG,
)
# Outermost: `GET /output/stream` straight to the stream, which observes itself and adds no frame
# per layer to an idle stream (streaming.routing.StreamsFirst); everything else to the above.
application = StreamsFirst(observed_application, guard=request_guard)

# Tracing (only with OTEL_EXPORTER_OTLP_ENDPOINT): the OpenTelemetry ASGI middleware outermost, so a
# request's span covers everything and a client's `traceparent` header is its parent. Without the
# setting the application is exactly the one above.
if tracing.setup(tracing.CORE):
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # One span per request: no child span per ASGI message (an SSE stream sends one per event).
    application = OpenTelemetryMiddleware(application, exclude_spans=["receive", "send"])  # type: ignore[assignment]

# Start-up is over: what it built (modules, classes, settings, URL patterns, the app) lives as long
# as the process. Frozen, it is left out of every collection, so the full collections that large
# object counts trigger walk only what requests made: a shorter pause on the requests' path.
gc.collect()
gc.freeze()

# Benchmarks only: per-batch timestamps of the input path and the fan-out, written to a file that
# `python -m bench.stage_trace` summarizes (operations/stage_trace.py; never imported without it).
if os.environ.get("BENCH_STAGE_TRACE"):
    from operations import stage_trace

    stage_trace.install(os.environ["BENCH_STAGE_TRACE"])
