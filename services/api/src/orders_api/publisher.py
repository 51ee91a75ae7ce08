"""Publishing to Kafka with every wait bounded.

aiokafka's idempotent producer never expires a batch: while Kafka is down a
send, and even `stop()`, can wait forever. Every wait here has a deadline, so
the API answers 503 instead of hanging. A few producer errors leave it failed
for good (an out-of-order sequence, an unknown producer id): the publisher then
throws that producer away and makes a new one on the next send.

Single orders go through a plain idempotent producer. A batch goes through a
transactional one, so that it is all or nothing: consumers read committed
records only, and a transaction that is not committed is never seen.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)

from orders_kafka.clients import Headers, ensure_topics, new_producer, stop_bounded
from orders_web.metrics import ServiceMetrics

from .settings import Settings

__all__ = ["KafkaUnavailable", "Publisher", "SendMetrics"]

log = logging.getLogger(__name__)

_FATAL = (OutOfOrderSequenceNumber, UnknownProducerId, ProducerFenced, ProducerClosed)


class KafkaUnavailable(Exception):
    """Kafka did not take the message in time; the caller answers 503.

    `maybe_sent` is True when the message had reached the producer: it may
    still be delivered later, so the caller must make sure it is never applied.
    """

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class _Lazy:
    """One producer, made on first use and replaced after it failed for good."""

    def __init__(self, connect: Callable[[], Awaitable[AIOKafkaProducer]]) -> None:
        self._connect = connect
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()

    async def get(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                self._producer = await self._connect()
            return self._producer

    def drop(self, producer: AIOKafkaProducer | None) -> None:
        """Stop using `producer` now (the next `get` makes a new one); it stops in the
        background, so no request waits for that (it can take seconds while Kafka hangs)."""
        if producer is None or producer is not self._producer:
            return
        self._producer = None
        task = asyncio.create_task(stop_bounded(producer, "producer stop"))
        self._stopping.add(task)
        task.add_done_callback(self._stopped)

    def _stopped(self, task: "asyncio.Task[None]") -> None:
        self._stopping.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("a discarded producer did not stop cleanly: %r", exc)

    async def close(self) -> None:
        self.drop(self._producer)
        if self._stopping:
            await asyncio.gather(*self._stopping)


class SendMetrics:
    """Kafka sends of the api: how long until acknowledged, and which failed (by why)."""

    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        metrics = metrics or ServiceMetrics("api")
        self.latency = metrics.histogram(
            "kafka_send_duration_seconds",
            "Time from a send (one order, or a batch's transaction) to Kafka's acknowledgment.",
            ("kind",),
        )
        self.failures = metrics.counter(
            "kafka_send_failures", "Sends Kafka did not acknowledge, by reason.", ("kind", "reason")
        )
        self.under_replicated = metrics.gauge(
            "kafka_topic_under_replicated",
            "1: the topic exists with fewer replicas than KAFKA_REPLICATION_FACTOR (found at start).",
            ("topic",),
            multiprocess_mode="max",
        )


class Publisher:
    def __init__(self, settings: Settings, metrics: SendMetrics | None = None) -> None:
        self._settings = settings
        self.metrics = metrics or SendMetrics()
        self._timeout = settings.kafka_send_timeout_ms / 1000
        self._topics_ready = False
        self._plain = _Lazy(self._connect)
        # One transactional id per process: a replacement producer fences its
        # predecessor, which aborts whatever transaction that one left open.
        self._transactional_id = f"orders-api-{socket.gethostname()}-{os.getpid()}"
        self._transactional = _Lazy(
            lambda: self._connect(
                transactional_id=self._transactional_id,
                # An api that dies mid-transaction holds up readers of its partitions
                # until the broker aborts the transaction: keep that short.
                transaction_timeout_ms=max(10_000, 2 * settings.kafka_send_timeout_ms),
            )
        )
        self._transaction_lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect now if Kafka answers; if not, the first send tries again."""
        try:
            await self._plain.get()
        except KafkaUnavailable as exc:
            log.warning("kafka not reachable at start-up, will retry on demand: %s", exc)

    async def stop(self) -> None:
        await asyncio.gather(self._plain.close(), self._transactional.close())

    async def publish(self, key: str, value: bytes, headers: Headers | None = None) -> None:
        """Return once every in-sync replica holds the message; raise KafkaUnavailable otherwise.

        One deadline covers everything, connecting included, so a burst of
        requests while Kafka is down waits no longer than one of them would.
        `headers`: the record's (orders_kafka.clients.record_headers()).
        """
        producer = None
        sending = False
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._plain.get()
                sending = True
                delivery = await producer.send(
                    self._settings.kafka_orders_topic, value, key=key.encode(), headers=headers
                )
                # Shielded: the batch is in flight whatever we do; keep its future intact.
                await asyncio.shield(delivery)
        except TimeoutError:
            self.metrics.failures.labels("single", "timeout").inc()
            raise KafkaUnavailable("Kafka did not acknowledge in time", maybe_sent=sending) from None
        except _FATAL as exc:
            self.metrics.failures.labels("single", "producer failed").inc()
            log.error("producer failed for good (%r); replacing it", exc)
            self._plain.drop(producer)
            raise KafkaUnavailable(f"Kafka producer failed: {exc}", maybe_sent=sending) from exc
        except KafkaError as exc:
            self.metrics.failures.labels("single", "refused").inc()
            raise KafkaUnavailable(f"Kafka refused the message: {exc}", maybe_sent=sending) from exc
        self.metrics.latency.labels("single").observe(time.perf_counter() - started)

    async def publish_all(
        self, messages: Sequence[tuple[str, bytes]], headers: Headers | None = None
    ) -> None:
        """Publish (key, value) pairs in one transaction: return once it is committed.

        Raises KafkaUnavailable otherwise, with `maybe_sent` True only when the
        commit was asked for and its outcome is unknown. A transaction that was
        not committed is aborted (by the broker at the latest, when the next
        producer with this id fences it): consumers never see any of it.
        """
        topic = self._settings.kafka_orders_topic
        producer = None
        committing = False
        started = time.perf_counter()
        try:
            # Waiting for the previous batch's transaction counts against the deadline too.
            async with asyncio.timeout(self._timeout), self._transaction_lock:
                producer = await self._transactional.get()
                await producer.begin_transaction()
                deliveries = [
                    await producer.send(topic, value, key=key.encode(), headers=headers)
                    for key, value in messages
                ]
                await asyncio.shield(asyncio.gather(*deliveries))
                committing = True
                await producer.commit_transaction()
        except (TimeoutError, KafkaError) as exc:
            self.metrics.failures.labels(
                "batch", "timeout" if isinstance(exc, TimeoutError) else "refused"
            ).inc()
            # Whatever state the transaction is in, the next batch starts on a fresh producer,
            # whose id fences this one (which aborts an open transaction).
            self._transactional.drop(producer)
            raise KafkaUnavailable(
                f"Kafka did not commit the batch: {exc!r}", maybe_sent=committing
            ) from None
        except BaseException:  # cancelled mid-transaction (shutdown): leave nothing open
            self._transactional.drop(producer)
            raise
        self.metrics.latency.labels("batch").observe(time.perf_counter() - started)

    async def check(self) -> None:
        """Readiness: the producer is connected and the cluster answers a metadata request."""
        producer = await self._plain.get()
        if not await producer.client.fetch_all_metadata():
            raise KafkaUnavailable("no metadata from Kafka", maybe_sent=False)

    async def _connect(self, **options: object) -> AIOKafkaProducer:
        settings = self._settings
        try:
            if not self._topics_ready:
                for found in await ensure_topics(settings, timeout=self._timeout):
                    self.metrics.under_replicated.labels(found.topic).set(1)
                self._topics_ready = True
            producer = new_producer(
                settings,
                linger_ms=settings.kafka_linger_ms,
                request_timeout_ms=max(1000, settings.kafka_send_timeout_ms),
                **options,
            )
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except BaseException:
                await stop_bounded(producer, "producer stop")
                raise
        except (TimeoutError, KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot connect to Kafka: {exc!r}", maybe_sent=False) from exc
        return producer
