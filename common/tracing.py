"""OpenTelemetry tracing, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (CONTRACT.md, "Tracing").

Each process calls `setup("<service.name>")` once at start: with the setting, spans are batched and
exported over OTLP/HTTP (protobuf) by a background thread; an exporter that cannot reach its
receiver drops spans after its retries, and nothing on a request waits for it. Without the setting
`setup` does nothing and every helper here is a plain `if` that returns: no span object, no context
switch, no `traceparent` (what keeps `POST /input` as fast as without tracing: bench/README.md).

Context crosses each boundary as a W3C `traceparent`: HTTP headers (the ASGI instrumentation reads a
client's), MCP `_meta` (`traceparent`, as MCP 2026-07-28 reserves it), and a text column on the rows
that carry work to another process (the memory outbox entry, the turn).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

CORE = "cortex-core"
TURN_WORKER = "cortex-turn-worker"
OUTBOX = "cortex-outbox"
MEMORY = "cortex-memory"
COGNITION = "cortex-cognition"
WEBHOOKS = "cortex-webhooks"

_enabled = False
tracer = trace.get_tracer("cortex")


def enabled() -> bool:
    return _enabled


def setup(service_name: str) -> bool:
    """Install the SDK's tracer provider for this process when OTEL_EXPORTER_OTLP_ENDPOINT is set
    (the standard OTEL_* variables configure the exporter); True when tracing is on."""
    global _enabled
    if _enabled or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def shutdown() -> None:
    """Flush what is batched (a worker's last spans) before the process exits."""
    if _enabled:
        provider = trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.shutdown()  # type: ignore[attr-defined]


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str = "",
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: list[str] | None = None,
) -> Iterator[trace.Span | None]:
    """A span (the current one's child, or `parent`'s: a `traceparent` carried by a row or `_meta`),
    current while the block runs; None and no work when tracing is off."""
    if not _enabled:
        yield None
        return
    context = propagate.extract({"traceparent": parent}) if parent else None
    linked = [
        trace.Link(trace.get_current_span(propagate.extract({"traceparent": other})).get_span_context())
        for other in links or ()
    ]
    with tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes, links=linked) as current:
        yield current


def traceparent() -> str:
    """The current span's `traceparent` (to store on a row or send in `_meta`); "" when off."""
    if not _enabled:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


async def stamp_request(request: Any) -> None:
    """An httpx request hook: the current trace in the W3C `traceparent` header (with `_meta`, how an
    expert or a service joins the caller's trace); nothing when tracing is off."""
    parent = traceparent()
    if parent:
        request.headers["traceparent"] = parent


def meta() -> dict[str, Any] | None:
    """MCP `_meta` carrying the current trace, or None (nothing is sent when tracing is off)."""
    parent = traceparent()
    return {"traceparent": parent} if parent else None


def attach(parent: str) -> object | None:
    """Make `parent` the current context (for code that cannot use `span`); `detach` it after."""
    if not _enabled or not parent:
        return None
    return otel_context.attach(propagate.extract({"traceparent": parent}))


def detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]
