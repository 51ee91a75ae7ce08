"""The processor's small HTTP side: health checks and Prometheus metrics."""

import contextlib
from collections.abc import Iterable, Iterator

import uvicorn
from fastapi import FastAPI
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from orders_contract.models import OrderStatus
from orders_web.http import NO_TELEMETRY, health_router, install_common, redis_write_check
from orders_web.metrics import RequestMetrics, ServiceMetrics

from .relay import Relay
from .worker import Worker

__all__ = ["HealthServer", "RelayCollector", "WorkerCollector", "create_health_app"]

_COUNTERS = (  # name (after processor_orders_, before _total), field of worker.metrics, help
    ("received", "received", "Records taken from Kafka."),
    ("completed", "completed", "Orders this process completed."),
    ("replayed", "replayed", "Records whose work was already done."),
    ("cancelled", "cancelled", "Cancellations this process applied."),
    ("found_cancelled", "found_cancelled", "Orders the api cancelled before processing began."),
    ("abandoned", "abandoned", "Events ignored: the api answered 503."),
    ("dead_lettered", "dead_lettered", "Records sent to the DLQ."),
    ("retries", "retries", "Retries after transient errors."),
    ("commits", "commits", "Offset commits."),
    ("commit_failures", "commit_failures", "Failed commits."),
)

TRANSITIONS = (OrderStatus.PLACED, OrderStatus.PROCESSING, OrderStatus.COMPLETED, OrderStatus.CANCELLED)
"""The statuses the processor moves orders to: exported from the start, at 0."""


class WorkerCollector(Collector):
    """The counters the worker keeps (`worker.metrics`), read at each scrape. The processor is
    one process per instance, so its own numbers are the instance's."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterable[Metric]:
        m = self._worker.metrics
        for name, field, text in _COUNTERS:
            yield CounterMetricFamily(f"processor_orders_{name}", text, value=getattr(m, field))
        yield GaugeMetricFamily("processor_orders_in_flight", "Records being processed now.", m.in_flight)
        yield GaugeMetricFamily(
            "processor_orders_assigned_partitions", "Partitions owned now.", len(m.assigned)
        )
        transitions = CounterMetricFamily(
            "processor_order_transitions",
            "Status transitions this process applied, by the status the order moved to.",
            labels=["status"],
        )
        for status in sorted({*TRANSITIONS, *m.transitions}):
            transitions.add_metric([status.value], m.transitions.get(status, 0))
        yield transitions
        dead_letters = CounterMetricFamily(
            "processor_dead_letters", "Records sent to the DLQ, by the kind of reason.", labels=["reason"]
        )
        for reason, count in sorted(m.dead_letters.items()):
            dead_letters.add_metric([reason], count)
        yield dead_letters
        histogram = m.placed_to_completed
        yield HistogramMetricFamily(
            "processor_order_placed_to_completed_seconds",
            "Seconds from an order's creation (the api accepting it) to its completion by this process.",
            buckets=histogram.buckets(),
            sum_value=histogram.total,
        )
        lag = GaugeMetricFamily(
            "processor_consumer_lag",
            "Per partition this process owns: end offset minus committed offset.",
            labels=["topic", "partition"],
        )
        for tp, records in sorted(self._worker.lag().items()):
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag


class RelayCollector(Collector):
    """The status relay's counters (`relay.metrics`), read at each scrape."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterable[Metric]:
        m = self._relay.metrics
        yield CounterMetricFamily("processor_relay_published", "Status events published.", value=m.published)
        yield CounterMetricFamily(
            "processor_relay_transactions", "Kafka transactions the relay committed.", value=m.transactions
        )
        yield CounterMetricFamily(
            "processor_relay_gaps",
            "Times the update stream was trimmed before the relay published it (events lost).",
            value=m.gaps,
        )
        yield CounterMetricFamily(
            "processor_relay_skipped",
            "Stream entries without a readable order (not published).",
            value=m.skipped,
        )
        yield GaugeMetricFamily("processor_relay_leader", "1 while this process holds the lease.", m.leader)
        yield GaugeMetricFamily(
            "processor_relay_stalled", "1 while the stream is behind the published position.", m.stalled
        )


def create_health_app(worker: Worker, redis: Redis | None = None, relay: Relay | None = None) -> FastAPI:
    """Health and metrics of `worker` (and `relay`); `redis`: the worker's store client, whose
    connections are then named and counted (see `ServiceMetrics.watch_redis`)."""
    app = FastAPI(
        title="Order processor", version="0.1.0", docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    install_common(app)
    app.state.metrics = metrics = ServiceMetrics("processor")
    metrics.register(WorkerCollector(worker))
    worker.on_redis_error = metrics.redis_errors.labels("worker").inc  # each is retried
    if relay is not None:
        metrics.register(RelayCollector(relay))
    if redis is not None:
        metrics.watch_redis(redis)
    app.add_middleware(RequestMetrics, metrics=metrics)
    redis_ready = redis_write_check(worker.redis_ready)  # "down: refuses writes (OOM ...)" when full
    app.include_router(health_router(lambda request: {"kafka": worker.kafka_ready, "redis": redis_ready}))
    app.include_router(metrics.router())
    return app


class HealthServer(uvicorn.Server):
    """uvicorn inside the worker's event loop; the worker, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
