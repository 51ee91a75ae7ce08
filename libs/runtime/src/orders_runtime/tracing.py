"""Tracing with OpenTelemetry: one trace per order, from the POST to COMPLETED.

`setup(service, settings)` makes the process's tracer provider when an OTLP
endpoint is configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the exporter reads the other `OTEL_*`
variables itself) and `TRACING_SAMPLE_RATIO` is above 0: a parent-based ratio
sampler, so a trace sampled at the api is sampled everywhere. Otherwise tracing
stays off and every helper here returns at once: the hot path pays one global
read (`ENABLED`).

The context crosses Kafka twice over: in the record headers (W3C `traceparent`,
`tracestate`) and in the CloudEvent's distributed tracing extension attributes
of the same names. It crosses Redis in the update stream entry (`trace`), so
the query service's send of an update links to the transition that made it.
Every span carries the order id (`ORDER_ID`), so an order's trace is found by it.

Which spans come from OpenTelemetry's instrumentation packages and which are written here:
HTTP requests are traced by opentelemetry-instrumentation-fastapi (`instrument`), only when
tracing is on. Kafka and Redis spans are written by hand, for what the packages cannot do
here: the aiokafka package's consume span ends when `getmany` returns, before the processor's
per-record tasks run, so it cannot parent their work; and the store sends the Redis calls of
many tasks in one pipeline from a task of its own (batching.py), so the redis package's span
would belong to whichever task flushed. The hand-written spans (`orders publish`, `orders
process`, `order start`/`work`/`complete`/`cancel` around each store call, `sse send`) cost
one global read when tracing is off; `make bench` reports off / 10% / 100% side by side.
"""

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orders_contract.settings import TracingSettings

__all__ = [
    "ENABLED",
    "ORDER_ID",
    "TRACE_HEADERS",
    "cloudevent_context",
    "context_from_headers",
    "context_from_traceparent",
    "current_ids",
    "enabled",
    "inject_headers",
    "setup",
    "shutdown",
    "span",
    "trace_fields",
    "traceparent",
]

log = logging.getLogger(__name__)

ORDER_ID = "order.id"
"""The span attribute naming the order (Jaeger finds a trace by it: tag `order.id=<id>`)."""

TRACE_HEADERS = ("traceparent", "tracestate")
"""W3C trace context: the Kafka header names, and the CloudEvent extension attribute names."""

ENABLED = False
"""True once `setup` made a provider: read by the helpers before doing anything."""

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("orders")
_provider: Any = None


def enabled() -> bool:
    return ENABLED


def setup(service: str, settings: TracingSettings) -> bool:
    """Make this process's tracer provider if tracing is configured (see the module's doc);
    True when it is on. `service` names the resource unless `OTEL_SERVICE_NAME` does."""
    global ENABLED, _provider, _TRACER
    configured = any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    if not configured or disabled or settings.tracing_sample_ratio <= 0:
        return False
    if ENABLED:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=ParentBasedTraceIdRatio(settings.tracing_sample_ratio),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider, _TRACER, ENABLED = provider, provider.get_tracer("orders"), True
    log.info("tracing on: %s, sampling %.0f%%", service, settings.tracing_sample_ratio * 100)
    return True


def shutdown() -> None:
    """Send the spans still queued (bounded by the exporter's timeout)."""
    if _provider is not None:
        _provider.shutdown()


_OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def span(
    name: str,
    order_id: str | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    links: Sequence[Link] = (),
    attributes: Mapping[str, str | int] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span named `name`, current inside the `with`, carrying `order_id`; a child of
    `context` when given (one extracted from Kafka headers), else of the current span.
    Nothing at all when tracing is off."""
    if not ENABLED:
        return _OFF
    attrs: dict[str, str | int] = dict(attributes or {})
    if order_id:
        attrs[ORDER_ID] = order_id
    return _TRACER.start_as_current_span(name, context=context, kind=kind, links=links, attributes=attrs)


def inject_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Append the current span's context to Kafka `headers` (and return them)."""
    if ENABLED:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        headers.extend((name, carrier[name].encode()) for name in TRACE_HEADERS if name in carrier)
    return headers


def trace_fields() -> dict[str, str]:
    """The current span's context as CloudEvent extension attributes ({} when off)."""
    if not ENABLED:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return {name: carrier[name] for name in TRACE_HEADERS if name in carrier}


def traceparent() -> str:
    """The current span's `traceparent` ('' when off or no span is recording)."""
    return trace_fields().get("traceparent", "")


def context_from_headers(headers: Iterable[tuple[str, bytes]]) -> Context | None:
    """The trace context Kafka `headers` carry (None when off or they carry none)."""
    if not ENABLED:
        return None
    carrier = {name: value.decode("latin-1") for name, value in headers if name in TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else None


def cloudevent_context(event: Any) -> Context | None:
    """The trace context of a CloudEvent's extension attributes (None when off or absent)."""
    if not ENABLED or not getattr(event, "traceparent", None):
        return None
    carrier = {name: value for name in TRACE_HEADERS if (value := getattr(event, name, None))}
    return _PROPAGATOR.extract(carrier)


def context_from_traceparent(value: str | None) -> Context | None:
    """The context of a `traceparent` kept elsewhere (the update stream entry)."""
    if not ENABLED or not value:
        return None
    return _PROPAGATOR.extract({"traceparent": value})


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in hex, for logs; None when there is none."""
    if not ENABLED:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextlib.contextmanager
def traced(service: str, settings: TracingSettings) -> Iterator[bool]:
    """`setup` for the life of a `with` block, flushing the spans at its end."""
    on = setup(service, settings)
    try:
        yield on
    finally:
        if on:
            shutdown()


_UNTRACED_ROUTES = "health/.*,metrics"
"""Health checks and scrapes: frequent, and of no order."""


def instrument(app: Any) -> None:
    """Trace every request of a FastAPI `app` (OpenTelemetry's ASGI middleware), when on."""
    if ENABLED:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # The ASGI middleware's own spans per message received and sent are left out.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=_UNTRACED_ROUTES, exclude_spans=["receive", "send"]
        )


def tag_order(order_id: str) -> None:
    """Put the order id on the current span (the request's, for one order's route)."""
    if ENABLED:
        trace.get_current_span().set_attribute(ORDER_ID, order_id)
