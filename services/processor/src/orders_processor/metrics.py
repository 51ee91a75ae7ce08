"""The processor's metrics: prometheus_client objects of its app's `ServiceMetrics`, one set each
for the keyed consumer, the order handlers and the status relay.

The processor is one process per instance, so its numbers are the instance's. Every name
below is one that deploy/ (alert rules, dashboard) may refer to: keep them.
"""

from collections.abc import Callable, Iterable, Mapping

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orders_contract.models import OrderStatus
from orders_web.metrics import LATENCY_BUCKETS, ServiceMetrics

from .consumer import ConsumerMetrics

__all__ = [
    "COMPLETION_BUCKETS",
    "TRANSITIONS",
    "HandlerMetrics",
    "RelayMetrics",
    "consumer_metrics",
    "current_value",
]

COMPLETION_BUCKETS = (*LATENCY_BUCKETS[6:], 30.0, 60.0, 300.0)
"""Seconds from an order's creation to its completion: the processing delay (200 ms by default)
and above."""

TRANSITIONS = (OrderStatus.PLACED, OrderStatus.PROCESSING, OrderStatus.COMPLETED, OrderStatus.CANCELLED)
"""The statuses the processor moves orders to: exported from the start, at 0."""


def consumer_metrics(
    service: ServiceMetrics, lag: Callable[[], Mapping[TopicPartition, int]]
) -> ConsumerMetrics:
    """The keyed consumer's metrics under the processor's names; `lag`: read at each scrape."""
    service.register(_Lag(lag))
    return ConsumerMetrics(
        received=service.counter("orders_received", "Records taken from Kafka."),
        retries=service.counter("orders_retries", "Retries after transient errors."),
        commits=service.counter("orders_commits", "Offset commits."),
        commit_failures=service.counter("orders_commit_failures", "Failed commits."),
        in_flight=service.gauge("orders_in_flight", "Records being processed now."),
        assigned_partitions=service.gauge("orders_assigned_partitions", "Partitions owned now."),
    )


class HandlerMetrics:
    """What the order handlers did."""

    def __init__(self, service: ServiceMetrics) -> None:
        self.completed = service.counter("orders_completed", "Orders this process completed.")
        self.replayed = service.counter("orders_replayed", "Records whose work was already done.")
        self.cancelled = service.counter("orders_cancelled", "Cancellations this process applied.")
        self.found_cancelled = service.counter(
            "orders_found_cancelled", "Orders the api cancelled before processing began."
        )
        self.abandoned = service.counter("orders_abandoned", "Events ignored: the api answered 503.")
        self.dead_lettered = service.counter("orders_dead_lettered", "Records sent to the DLQ.")
        self.transitions = service.counter(
            "order_transitions",
            "Status transitions this process applied, by the status the order moved to.",
            ("status",),
        )
        for status in TRANSITIONS:
            self.transitions.labels(status.value)
        self.dead_letters = service.counter(
            "dead_letters", "Records sent to the DLQ, by the kind of reason.", ("reason",)
        )
        self.placed_to_completed = service.histogram(
            "order_placed_to_completed_seconds",
            "Seconds from an order's creation (the api accepting it) to its completion by this process.",
            buckets=COMPLETION_BUCKETS,
        )
        self.redis_errors = service.redis_errors.labels("worker")
        """Failed Redis calls of the handlers (each is retried)."""

    def transitioned(self, status: OrderStatus) -> None:
        self.transitions.labels(status.value).inc()


class RelayMetrics:
    """What the status relays of this process did, summed over the shards (with one shard, the
    numbers of its one relay), and which shards' leases it holds."""

    def __init__(self, service: ServiceMetrics) -> None:
        self.published = service.counter("relay_published", "Status events published.")
        self.transactions = service.counter("relay_transactions", "Kafka transactions the relay committed.")
        self.gaps = service.counter(
            "relay_gaps", "Times the update stream was trimmed before the relay published it (events lost)."
        )
        self.skipped = service.counter(
            "relay_skipped", "Stream entries without a readable order (not published)."
        )
        self.leader = service.gauge(
            "relay_leader", "Shards whose relay lease this process holds (one shard: 1 while it holds it)."
        )
        self.shard_leader = service.gauge(
            "relay_shard_leader", "1 while this process holds the shard's relay lease.", ("shard",)
        )
        self.stalled = service.gauge(
            "relay_stalled", "Shards whose update stream is behind the position the topic holds."
        )
        self.unreplicated = service.gauge(
            "relay_unreplicated",
            "Shards whose next entries wait for their replicas to acknowledge them (REDIS_WAIT_REPLICAS).",
        )
        self._all = (
            self.published,
            self.transactions,
            self.gaps,
            self.skipped,
            self.leader,
            self.shard_leader,
            self.stalled,
            self.unreplicated,
        )
        self._leading: set[int] = set()
        self._stalled: set[int] = set()
        self._unreplicated: set[int] = set()

    @property
    def leading(self) -> frozenset[int]:
        """The shards whose leases this process holds."""
        return frozenset(self._leading)

    def lead(self, shard: int, leading: bool) -> None:
        """Shard `shard`'s lease taken (True) or given up (False)."""
        _mark(self._leading, shard, leading)
        self.leader.set(len(self._leading))
        self.shard_leader.labels(str(shard)).set(int(leading))

    def stall(self, shard: int, stalled: bool) -> None:
        """Shard `shard`'s stream found behind the topic's position (True), or not (False)."""
        _mark(self._stalled, shard, stalled)
        self.stalled.set(len(self._stalled))

    def wait_replicas(self, shard: int, waiting: bool) -> None:
        """Shard `shard`'s entries not confirmed on the replicas (True), or confirmed (False)."""
        _mark(self._unreplicated, shard, waiting)
        self.unreplicated.set(len(self._unreplicated))

    def collectors(self) -> tuple[Counter | Gauge, ...]:
        return self._all


def _mark(shards: set[int], shard: int, on: bool) -> None:
    if on:
        shards.add(shard)
    else:
        shards.discard(shard)


class _Lag(Collector):
    def __init__(self, lag: Callable[[], Mapping[TopicPartition, int]]) -> None:
        self._lag = lag

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "processor_consumer_lag",
            "Per partition this process owns: end offset minus committed offset.",
            labels=["topic", "partition"],
        )
        for tp, records in sorted(self._lag().items()):
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag


def current_value(metric: Counter | Gauge, **labels: str) -> float:
    """The current value of a counter (its total) or gauge, of the child with `labels`."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == labels and not sample.name.endswith("_created"):
                return sample.value
    return 0.0
