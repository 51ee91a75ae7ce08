"""Publishing to Kafka with every wait bounded.

aiokafka's idempotent producer never expires a batch: while Kafka is down a
send, and even `stop()`, can wait forever. Every wait here has a deadline, so
the API answers 503 instead of hanging. A few producer errors leave it failed
for good (an out-of-order sequence, an unknown producer id): the publisher then
throws that producer away and makes a new one on the next send.
"""

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)

from orders_common.kafka import ensure_topics, new_producer, stop_bounded

from .settings import Settings

__all__ = ["KafkaUnavailable", "Publisher"]

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


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.kafka_send_timeout_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._topics_ready = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect now if Kafka answers; if not, the first send tries again."""
        try:
            await self._current()
        except KafkaUnavailable as exc:
            log.warning("kafka not reachable at start-up, will retry on demand: %s", exc)

    async def stop(self) -> None:
        await self._discard()

    async def publish(self, key: str, value: bytes) -> None:
        """Return once every in-sync replica holds the message; raise KafkaUnavailable otherwise.

        One deadline covers everything, connecting included, so a burst of
        requests while Kafka is down waits no longer than one of them would.
        """
        producer = None
        sending = False
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._current()
                sending = True
                delivery = await producer.send(self._settings.kafka_orders_topic, value, key=key.encode())
                # Shielded: the batch is in flight whatever we do; keep its future intact.
                await asyncio.shield(delivery)
        except TimeoutError:
            raise KafkaUnavailable("Kafka did not acknowledge in time", maybe_sent=sending) from None
        except _FATAL as exc:
            log.error("producer failed for good (%r); replacing it", exc)
            if producer is not None:
                await self._discard(producer)
            raise KafkaUnavailable(f"Kafka producer failed: {exc}", maybe_sent=sending) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka refused the message: {exc}", maybe_sent=sending) from exc

    async def check(self) -> None:
        """Readiness: the producer is connected and the cluster answers a metadata request."""
        producer = await self._current()
        if not await producer.client.fetch_all_metadata():
            raise KafkaUnavailable("no metadata from Kafka", maybe_sent=False)

    async def _current(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                self._producer = await self._connect()
            return self._producer

    async def _connect(self) -> AIOKafkaProducer:
        settings = self._settings
        try:
            if not self._topics_ready:
                await ensure_topics(settings, timeout=self._timeout)
                self._topics_ready = True
            producer = new_producer(
                settings,
                linger_ms=settings.kafka_linger_ms,
                request_timeout_ms=max(1000, settings.kafka_send_timeout_ms),
            )
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except BaseException:
                await stop_bounded(producer, "producer stop")
                raise
        except (TimeoutError, KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot connect to Kafka: {exc!r}", maybe_sent=False) from exc
        return producer

    async def _discard(self, producer: AIOKafkaProducer | None = None) -> None:
        async with self._lock:
            if producer is None or producer is self._producer:
                current, self._producer = self._producer, None
                if current is not None:
                    await stop_bounded(current, "producer stop")
