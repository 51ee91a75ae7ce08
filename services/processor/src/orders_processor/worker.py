"""The consumer-group worker: the keyed consumer (consumer.py) of the orders topic, handing each
record to the order handlers (handlers.py), which dead-letter through a producer of its own.

The consumer keys records by order id, so one order's events are handled in order; it
commits a record only once its handler returned, `processor_commit_lag_ms` after (Redis's
once-a-second AOF fsync has it by then). Shutdown: stop fetching, let in-flight orders
finish (`processor_drain_timeout_ms`), commit, leave the group, stop the dead-letter
producer.
"""

import asyncio
import re

from orders_kafka.clients import ensure_topics
from orders_readmodel.store import OrderStore
from orders_web.metrics import ServiceMetrics

from .consumer import ConsumerConfig, KeyedConsumer, until_stopped
from .deadletter import KafkaDeadLetters
from .handlers import TRANSIENT, OrderHandlers
from .metrics import HandlerMetrics, consumer_metrics
from .settings import Settings

__all__ = ["Worker"]


class Worker:
    def __init__(self, settings: Settings, store: OrderStore, metrics: ServiceMetrics | None = None) -> None:
        """`metrics`: the app's metrics, which the worker's join (its own when None)."""
        s = self._settings = settings
        self._store = store
        self.service_metrics = metrics or ServiceMetrics("processor")
        self._dead_letters = KafkaDeadLetters(s)
        reject = re.compile(s.processor_reject_products) if s.processor_reject_products else None
        self.handlers = OrderHandlers(
            store,
            self._dead_letters,
            HandlerMetrics(self.service_metrics),
            delay_s=s.processing_delay_ms / 1000,
            reject=reject,
        )
        config = ConsumerConfig(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=s.kafka_consumer_group,
            topic=s.kafka_orders_topic,
            max_in_flight=s.processor_max_in_flight,
            commit_interval=s.processor_commit_interval_ms / 1000,
            commit_lag=s.processor_commit_lag_ms / 1000,
            drain_timeout=s.processor_drain_timeout_ms / 1000,
        )
        self.consumer = KeyedConsumer(
            config,
            self.handlers.handle,
            consumer_metrics(self.service_metrics, lambda: self.consumer.lag()),
            retry_on=TRANSIENT,
        )
        self._under_replicated = self.service_metrics.gauge(
            "kafka_topic_under_replicated",
            "1: the topic exists with fewer replicas than KAFKA_REPLICATION_FACTOR (found at start).",
            ("topic",),
            multiprocess_mode="max",
        )

    async def _ensure_topics(self) -> None:
        for found in await ensure_topics(self._settings):
            self._under_replicated.labels(found.topic).set(1)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, then drain, commit and leave the group."""
        if not await until_stopped(stopping, self._ensure_topics, "create topics"):
            return
        consumer, dead_letters = self.consumer, self._dead_letters
        try:
            if await until_stopped(
                stopping, consumer.start, "join the consumer group"
            ) and await until_stopped(stopping, dead_letters.start, "start the dead-letter producer"):
                await consumer.consume(stopping)
        finally:
            await consumer.release_all()
            await asyncio.gather(consumer.stop(), dead_letters.stop())

    async def kafka_ready(self) -> None:
        """Kafka answers a metadata request."""
        await self.consumer.ready()

    async def redis_ready(self) -> None:
        """Redis takes a small write (a full or read-only Redis still answers a PING, but the
        processor could write nothing)."""
        await self._store.check_writes("processor")
