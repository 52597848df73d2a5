"""Prometheus metrics, served at `/metrics` to holders of the scrape token (`CORTEX_METRICS_TOKEN`) only.

Counters and histograms cost a lock and an add each: nothing here touches the database on a
request. What needs the database (the outbox backlog) is computed when Prometheus scrapes, by a
collector the owning app registers (`register_scrape_collector`, from `mcp_services.outbox.metrics`).

Several processes (uvicorn `--workers`, and the services and outbox worker under `run_cortex`)
share their metrics through prometheus-client's multiprocess mode: with `PROMETHEUS_MULTIPROC_DIR`
set (`run_cortex` sets it), each process writes its values there and any core process's `/metrics`
answers for all of them.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from common.errors import ErrorCode

HTTP_REQUESTS = Counter(
    "cortex_http_requests_total", "HTTP requests answered, by route and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "cortex_http_request_duration_seconds",
    "Time to answer an HTTP request (streams excluded), by route and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
THROTTLED = Counter("cortex_throttled_requests_total", "Requests refused with 429, by route.", ["route"])
OPEN_STREAMS = Gauge(
    "cortex_open_streams", "Open event streams, by transport.", ["transport"], multiprocess_mode="livesum"
)
EVENTS_PUBLISHED = Counter("cortex_events_published_total", "Event copies handed to the channel layer after commit.")
EVENTS_DELIVERED = Counter(
    "cortex_events_delivered_total", "Events written to a client's stream, by transport.", ["transport"]
)
MCP_CALLS = Histogram(
    "cortex_mcp_call_duration_seconds",
    "Calls to the memory and cognition services, by service and operation.",
    ["service", "operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MCP_ERRORS = Counter(
    "cortex_mcp_call_errors_total",
    "Failed calls to the services, by service, operation and code.",
    ["service", "operation", "code"],
)
MODEL_TOKENS = Counter(
    "cortex_model_tokens_total",
    "Model tokens as the model reported them, by model and kind (input, output).",
    ["model", "kind"],
)
LOGIN_FAILURES = Counter("cortex_login_failures_total", "Failed logins (wrong email or password).")

for transport in ("sse", "websocket"):
    OPEN_STREAMS.labels(transport)
    EVENTS_DELIVERED.labels(transport)


_scrape_collectors: list[Collector] = []


def register_scrape_collector(collector: Collector) -> None:
    """A collector that reads its numbers when Prometheus scrapes (once per process)."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)
        REGISTRY.register(collector)


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in _scrape_collectors:
        registry.register(collector)
    return registry


def _login_failed(sender: object, **kwargs: object) -> None:
    LOGIN_FAILURES.inc()


user_login_failed.connect(_login_failed, dispatch_uid="cortex-metrics-login-failed")


@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics` with `Authorization: Bearer <CORTEX_METRICS_TOKEN>`: a credential of its own,
    which no process of the deployment holds (the service token opens the services, not this).
    Without the token (or with none configured) it does not exist: the same 404 as any unknown path."""
    # Imported here: the workers and services record metrics (this module) but serve no view, and
    # the error handlers import DRF.
    from common.web.handlers import json_error

    token = settings.CORTEX["METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return json_error(404, ErrorCode.NOT_FOUND, "Not found.")
    if request.method != "GET":
        response = json_error(405, ErrorCode.METHOD_NOT_ALLOWED, f'Method "{request.method}" not allowed.')
        response["Allow"] = "GET"
        return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
