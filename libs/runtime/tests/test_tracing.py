"""The trace context's way through the system: CloudEvent extension attributes, Kafka headers
(tracing.py, in a process of its own with a real provider) and the update stream entry."""

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from orders_contract.events import decode_event, encode_placed
from orders_contract.models import Order, OrderStatus
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_cloudevent_carries_the_distributed_tracing_extension(new_order: Callable[..., Order]) -> None:
    order = new_order()
    raw = encode_placed(order, "e-1", trace={"traceparent": PARENT, "tracestate": "k=v"})
    assert json.loads(raw)["traceparent"] == PARENT
    event = decode_event(raw)
    assert event.traceparent == PARENT
    assert event.tracestate == "k=v"
    assert "traceparent" not in json.loads(encode_placed(order, "e-2"))


_PROBE = """
import json, os
from opentelemetry.trace import SpanKind
from orders_runtime import tracing
from orders_contract.settings import TracingSettings
out = {"off_at_0": tracing.setup("t", TracingSettings(tracing_sample_ratio=0))}
out["on"] = tracing.setup("t", TracingSettings(tracing_sample_ratio=0.1))
parent = tracing.context_from_traceparent(%(parent)r)
with tracing.span("produce", "o-1", kind=SpanKind.PRODUCER, context=parent):
    headers = tracing.inject_headers([("content-type", b"x")])
    out["fields"] = tracing.trace_fields()
    out["ids"] = tracing.current_ids()
out["names"] = [name for name, _ in headers]
with tracing.span("consume", "o-1", context=tracing.context_from_headers(headers)) as span:
    out["child_trace"] = tracing.current_ids()[0]
    out["sampled"] = span.get_span_context().trace_flags.sampled
tracing.shutdown()
print(json.dumps(out))
"""


def test_the_context_crosses_kafka_headers_and_sampling_follows_the_parent() -> None:
    """In a process of its own: setting the provider is once per process. The exporter points
    at a port nothing listens on (its failures are logged, never raised)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE % {"parent": PARENT}],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "PATH": "",
        },
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["off_at_0"] is False
    assert out["on"] is True
    assert out["names"] == ["content-type", "traceparent"]
    trace_id = PARENT.split("-")[1]
    assert out["fields"]["traceparent"].split("-")[1] == trace_id
    assert out["ids"][0] == trace_id
    assert out["child_trace"] == trace_id
    assert out["sampled"] is True  # the parent was sampled: 10% does not drop its children


@pytest.mark.redis
async def test_the_update_stream_entry_carries_the_transitions_trace(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    await store.create(order, trace=PARENT)
    await store.transition(order.order_id, OrderStatus.PROCESSING)
    await store.transition(order.order_id, OrderStatus.COMPLETED, trace=PARENT.replace("b7ad", "c7ad"))
    updates = await UpdateStream(store.redis, store.keys).updates_after("0-0")
    assert updates is not None
    assert [(u.status, u.trace) for u in updates] == [
        (OrderStatus.PLACED, PARENT),
        (OrderStatus.PROCESSING, None),
        (OrderStatus.COMPLETED, PARENT.replace("b7ad", "c7ad")),
    ]
    started = new_order()
    await store.start(started, "e-1", trace=PARENT)
    after = await UpdateStream(store.redis, store.keys).updates_after(updates[-1].position)
    assert after is not None
    (placed, processing) = after
    assert (placed.trace, processing.trace) == (PARENT, PARENT)
