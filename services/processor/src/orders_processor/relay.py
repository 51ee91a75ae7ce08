"""The status relay: every transition in the update stream, published once to `orders.status`.

An outbox. Each transition's Redis function appends it, with the order as it is
after it, to the update stream in the same atomic step (orders.lua, `record`).
The relay reads that stream in order and publishes each entry as an
`order.status.changed` CloudEvent (key: the order id) in Kafka transactions of
up to `BATCH` entries. Every record carries its stream entry's id in the
`orders.position` header, so how far the relay got is recorded in Kafka, in
the very transaction that publishes the entries: on start the relay reads the
last committed record of each partition (read_committed) and goes on after the
highest position. A crash before a commit leaves an aborted transaction that
read_committed consumers never see; after it, nothing is lost or repeated.

- One relay at a time: every processor runs this loop, and the one holding a
  Redis lease (`Keys.relay_lease`, `LEASE_S`, renewed while publishing)
  publishes. The producer's transactional.id is fixed (per status topic), so a
  relay that lost its lease but still runs (a zombie: paused, cut off) is
  fenced by the next one's start, and its open transaction is aborted.
- Only durable entries: an entry is published once it is `processor_commit_lag_ms`
  old by Redis's clock, so that Redis's once-a-second AOF fsync has it on disk.
  A Redis that crashes loses at most its last second, and the processor then
  applies those transitions again from Kafka: had the lost entries been
  published, the new ones would repeat them.
- The stream is capped (`REDIS_STREAM_MAXLEN`, approximate). A relay further
  behind than the cap (stopped for a long time while orders went on) finds its
  position trimmed away: those transitions can no longer be published. It logs
  an error, counts `processor_relay_gaps_total`, and goes on from the oldest
  entry left; consumers see the gap as a jump in an order's `version`.
- A stream behind the position (Redis lost its data and is empty, or was
  rebuilt without the stream's last entry) stops the relay with an error
  logged every minute, rather than publish again what Kafka holds.
"""

import asyncio
import contextlib
import logging
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from orders_contract.events import POSITION_HEADER, encode_status_changed
from orders_contract.models import Order
from orders_contract.settings import KafkaSettings
from orders_kafka.clients import ensure_topics, new_producer, record_headers, start_reader, stop_bounded
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import START, Update, position_key
from orders_runtime.backoff import Backoff
from orders_web.metrics import ServiceMetrics

from .metrics import RelayMetrics
from .settings import Settings

__all__ = ["BATCH", "LEASE_S", "Relay", "last_published", "transactional_id"]

log = logging.getLogger(__name__)

LEASE_S = 5.0
"""How long the relay lease lasts unless renewed: a dead leader's successor starts after this."""
BATCH = 500
"""Stream entries published in one transaction at most."""
_TRANSACTION_TIMEOUT_S = 30.0
_IDLE_S = 0.1
_TRANSIENT = (RedisError, KafkaError, OSError, LockError, TimeoutError)


def transactional_id(settings: KafkaSettings) -> str:
    """The relay's fixed transactional.id: one per status topic."""
    return f"orders-relay.{settings.kafka_status_topic}"


class Relay:
    def __init__(self, settings: Settings, store: OrderStore, metrics: ServiceMetrics | None = None) -> None:
        """`metrics`: the app's metrics, which the relay's join (its own when None)."""
        self._settings = settings
        self._store = store
        self._stream = store.stream()
        self._lag_ms = settings.processor_commit_lag_ms
        self._stalled_logged = 0.0
        self._resume_at: str | None = None
        """After a gap: the oldest entry left, the next to publish."""
        self.service_metrics = metrics or ServiceMetrics("processor")
        self.metrics = RelayMetrics(self.service_metrics)

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish while holding the lease, until `stopping` is set."""
        lease = self._store.lease(self._store.keys.relay_lease(0), LEASE_S)
        backoff = Backoff(first=0.2, cap=5.0)
        while not stopping.is_set():
            try:
                if not await lease.acquire(blocking=False):
                    await _wait(stopping, LEASE_S / 3)
                    continue
                log.info("relay: this processor publishes %s", self._settings.kafka_status_topic)
                self.metrics.leader.set(1)
                try:
                    await self._lead(lease, stopping)
                finally:
                    self.metrics.leader.set(0)
                    with contextlib.suppress(LockError, RedisError, OSError):
                        await lease.release()
                backoff.reset()
            except _TRANSIENT as exc:
                log.warning("relay: %r; starting again in %.1fs", exc, backoff.next_delay)
                await backoff.wait(stopping)
            except Exception:  # a bug must not end status events for good: logged, retried
                log.exception("relay: unexpected failure; starting again in %.1fs", backoff.next_delay)
                await backoff.wait(stopping)

    async def _lead(self, lease: Lock, stopping: asyncio.Event) -> None:
        """Publish while the lease is renewed: the renewal runs beside the publishing the whole
        time (a slow start included), and losing the lease stops the publishing (its open
        transaction is never committed)."""
        s = self._settings
        producer = new_producer(
            s, transactional_id=transactional_id(s), transaction_timeout_ms=int(_TRANSACTION_TIMEOUT_S * 1000)
        )
        publishing = asyncio.create_task(self._publish(producer, stopping))
        renewing = asyncio.create_task(_renew(lease))
        try:
            await asyncio.wait({publishing, renewing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (publishing, renewing):
                task.cancel()
            try:
                outcomes = await asyncio.gather(publishing, renewing, return_exceptions=True)
            finally:
                await stop_bounded(producer, "relay producer stop")
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    async def _publish(self, producer: AIOKafkaProducer, stopping: asyncio.Event) -> None:
        s = self._settings
        # Starting initialises the transactional id: a zombie with the same id is fenced and
        # its open transaction aborted, so the position read next is final.
        await asyncio.wait_for(producer.start(), _TRANSACTION_TIMEOUT_S)
        await ensure_topics(s)
        position = await last_published(s)
        log.info("relay: going on after stream position %s", position)
        while not stopping.is_set():
            async with asyncio.timeout(_TRANSACTION_TIMEOUT_S):
                position, more = await self._publish_next(producer, position)
            if not more:
                await _wait(stopping, _IDLE_S)

    async def _publish_next(self, producer: AIOKafkaProducer, position: str) -> tuple[str, bool]:
        """Publish the durable entries after `position` (one transaction); the new position and
        whether more may be waiting."""
        durable = str(await self._stream.clock_ms() - self._lag_ms) if self._lag_ms else "+"
        if self._resume_at is not None:
            updates: list[Update] | None = await self._stream.entries_from(self._resume_at, durable, BATCH)
            self._resume_at = None
        else:
            updates = await self._stream.updates_after(position, durable, count=BATCH)
        if updates is None:
            self._resume_at = await self._lost_track(position)
            return position, False
        self.metrics.stalled.set(0)
        if not updates:
            return position, False
        topic = self._settings.kafka_status_topic
        await producer.begin_transaction()
        deliveries: list[asyncio.Future[object]] = []
        try:
            for update in updates:
                value = _event(update)
                if value is None:
                    self.metrics.skipped.inc()
                    continue
                headers = [*record_headers(), (POSITION_HEADER, update.position.encode())]
                if update.trace:  # the transition's trace goes on with whoever consumes its event
                    headers.append(("traceparent", update.trace.encode()))
                deliveries.append(
                    await producer.send(topic, value, key=update.order_id.encode(), headers=headers)
                )
        finally:
            # Every delivery's outcome is taken (a fenced producer fails them all); the first
            # failure is raised.
            for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
        await producer.commit_transaction()
        self.metrics.transactions.inc()
        self.metrics.published.inc(len(deliveries))
        return updates[-1].position, len(updates) == BATCH

    async def _lost_track(self, position: str) -> str | None:
        """`position` is not in the stream: trimmed away (the oldest entry left is the next to
        publish; logged as a gap) or ahead of it (None: stall)."""
        first = await self._stream.oldest()
        if first is not None and position_key(first) > position_key(position):
            self.metrics.gaps.inc()
            log.error(
                "relay: the update stream was trimmed past position %s before it was published "
                "(the relay fell further behind than REDIS_STREAM_MAXLEN): the transitions up to %s "
                "are missing from %s",
                position,
                first,
                self._settings.kafka_status_topic,
            )
            return first
        self.metrics.stalled.set(1)
        if time.monotonic() - self._stalled_logged > 60:
            self._stalled_logged = time.monotonic()
            log.error(
                "relay: %s holds position %s, which the update stream has not reached (Redis lost "
                "its data?): publishing nothing; rebuild the read model (make rebuild)",
                self._settings.kafka_status_topic,
                position,
            )
        return None


async def _renew(lease: Lock) -> None:
    """Renew `lease` every third of its time; raises once it is lost (LockNotOwnedError) or
    cannot be renewed."""
    while True:
        await asyncio.sleep(LEASE_S / 3)
        await lease.reacquire()


def _event(update: Update) -> bytes | None:
    """The status event of `update`; None (skipped, counted) for an entry without a readable
    order: one bad entry must not stop every event after it."""
    if not update.order_text:
        log.warning("relay: update %s carries no order (skipped)", update.position)
        return None
    try:
        order = Order.model_validate(orjson.loads(update.order_text))
    except ValueError as exc:  # not JSON, or not an order (pydantic's ValidationError is one)
        log.error("relay: update %s carries an unreadable order (skipped): %s", update.position, exc)
        return None
    return encode_status_changed(order, update.at or order.created_at, update.trace)


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def last_published(settings: KafkaSettings, timeout: float = 60.0) -> str:
    """The highest stream position in the committed records of the status topic (START if none).

    Each partition's last committed record holds that partition's highest position (the relay
    publishes in stream order); the highest of those is where the last committed transaction ended.
    """
    consumer, partitions = await start_reader(settings, settings.kafka_status_topic, timeout)
    try:
        async with asyncio.timeout(timeout):
            best = START
            for tp in partitions:
                found = await _last_position(consumer, tp)
                if found and position_key(found) > position_key(best):
                    best = found
            return best
    finally:
        await stop_bounded(consumer, "relay position reader stop")


async def _last_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> str | None:
    """The position header of the last committed record of `tp`: read its tail, a wider one
    while the tail holds only transaction markers."""
    end = (await consumer.end_offsets([tp]))[tp]
    window = 64
    while end > 0:
        start = max(0, end - window)
        consumer.seek(tp, start)
        last = None
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.offset < end:
                    last = dict(record.headers).get(POSITION_HEADER) or last
        if last is not None:
            return last.decode()
        if start == 0:
            break
        window *= 8
    return None
