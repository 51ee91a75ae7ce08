"""The status relay: every transition in the update streams, published once to `orders.status`.

An outbox. Each transition's Redis function appends it, with the order as it is
after it, to its shard's update stream in the same atomic step (orders.lua,
`record`). A shard's relay reads that stream in order and publishes each entry as
an `order.status.changed` CloudEvent (key: the order id) in Kafka transactions of
up to `BATCH` entries, to its shard's partitions only (relay_topic.py; with one
shard, every partition, by key). Every record carries its stream entry's id in
the `orders.position` header, so how far a relay got is recorded in Kafka, in
the very transaction that publishes the entries: on start a shard's relay reads
the last committed record of each of its partitions (read_committed) and goes on
after the highest position. A crash before a commit leaves an aborted
transaction that read_committed consumers never see; after it, nothing is lost
or repeated.

- One relay per shard at a time: every processor runs a loop per shard, and the
  one holding the shard's Redis lease (`Keys.relay_lease(shard)`, `LEASE_S`,
  renewed while publishing) publishes it. The producer's transactional.id is
  fixed (per status topic and shard), so a relay that lost its lease but still
  runs (a zombie: paused, cut off) is fenced by the next one's start, and its
  open transaction is aborted.
- Leases spread over the processors by staggering: a processor that leads k
  shards tries a free lease only after waiting k * `STAGGER_S`, one lease at a
  time, while one that leads none tries at once; so processors started together
  take one shard each (as long as there are shards enough), and a dead leader's
  shards go first to those leading fewest. Nothing hands a lease over: a
  processor started after every lease is taken leads none until one is freed
  (its leader stops or dies).
- Only durable entries: an entry is published once it is `processor_commit_lag_ms`
  old by Redis's clock, so that Redis's once-a-second AOF fsync has it on disk.
  A Redis that crashes loses at most its last second, and the processor then
  applies those transitions again from Kafka: had the lost entries been
  published, the new ones would repeat them.
- Only replicated entries (`REDIS_WAIT_REPLICAS`, a Redis Cluster): before each
  transaction the relay has the shard's node confirm with WAIT that what it read
  is on that many replicas (`UpdateStream.confirm_replicated`), so a failover
  never takes back an entry it published. Until they acknowledge, it publishes
  nothing and tries again.
- A stream is capped (`REDIS_STREAM_MAXLEN`, approximate). A relay further
  behind than the cap (stopped for a long time while orders went on) finds its
  position trimmed away: those transitions can no longer be published. It logs
  an error, counts `processor_relay_gaps_total`, and goes on from the oldest
  entry left; consumers see the gap as a jump in an order's `version`.
- A stream behind the position (Redis lost its data and is empty, or was
  rebuilt without the stream's last entry) stops that shard's relay with an
  error logged every minute, rather than publish again what Kafka holds.
- A status topic with fewer partitions than shards is refused: `run` raises
  TooFewPartitions, and the processor stops.
"""

import asyncio
import contextlib
import logging
import time

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from orders_contract.events import POSITION_HEADER, encode_status_changed
from orders_contract.models import Order
from orders_kafka.clients import ensure_topics, new_producer, record_headers, stop_bounded
from orders_readmodel.batching import NotReplicated
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import Update, position_key
from orders_runtime.backoff import Backoff
from orders_web.metrics import ServiceMetrics

from .consumer import until_stopped
from .metrics import RelayMetrics
from .relay_topic import (
    TooFewPartitions,
    check_partitions,
    last_published,
    partition_of,
    shard_partitions,
    topic_partitions,
    transactional_id,
)
from .settings import Settings

__all__ = [
    "BATCH",
    "LEASE_S",
    "STAGGER_S",
    "Relay",
    "TooFewPartitions",
    "last_published",
    "transactional_id",
]

log = logging.getLogger(__name__)

LEASE_S = 5.0
"""How long a relay lease lasts unless renewed: a dead leader's successor starts after this."""
STAGGER_S = LEASE_S / 2
"""A processor leading k shards waits k times this before it tries a free lease: longer than the
LEASE_S / 3 between the tries of a processor leading none, which so comes first."""
BATCH = 500
"""Stream entries published in one transaction at most."""
_TRANSACTION_TIMEOUT_S = 30.0
_IDLE_S = 0.1
_TRANSIENT = (RedisError, KafkaError, OSError, LockError, TimeoutError)


class Relay:
    """The relay loops of one processor, one per shard of `store`."""

    def __init__(
        self,
        settings: Settings,
        store: OrderStore,
        metrics: ServiceMetrics | None = None,
        stagger_s: float = STAGGER_S,
    ) -> None:
        """`metrics`: the app's metrics, which the relay's join (its own when None);
        `stagger_s`: see STAGGER_S."""
        if settings.redis_shards != store.keys.shards:
            raise ValueError(f"REDIS_SHARDS={settings.redis_shards}, but the store has {store.keys.shards}")
        self._settings = settings
        self._stagger_s = stagger_s
        self._turn = asyncio.Lock()
        """Held while this processor tries a lease: one at a time, each after its stagger."""
        self.service_metrics = metrics or ServiceMetrics("processor")
        self.metrics = RelayMetrics(self.service_metrics)
        shards = range(store.keys.shards)
        self._shards = [_ShardRelay(settings, store, shard, self.metrics) for shard in shards]
        for shard in shards:
            self.metrics.lead(shard, False)  # each shard's gauge exported from the start, at 0

    @property
    def leading(self) -> frozenset[int]:
        """The shards whose leases this processor holds now."""
        return self.metrics.leading

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish each shard while holding its lease, until `stopping` is set. Raises
        TooFewPartitions when the status topic has fewer partitions than there are shards."""
        if not await until_stopped(stopping, self._check_topic, "check the status topic"):
            return
        tasks = [asyncio.create_task(self._run_shard(shard, stopping)) for shard in self._shards]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _check_topic(self) -> None:
        await ensure_topics(self._settings)
        partitions = await topic_partitions(self._settings)
        if not partitions:  # just created: its metadata is not everywhere yet
            raise UnknownTopicOrPartitionError(self._settings.kafka_status_topic)
        check_partitions(self._settings, partitions)

    async def _run_shard(self, relay: "_ShardRelay", stopping: asyncio.Event) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        while not stopping.is_set():
            try:
                if not await self._acquire(relay, stopping):
                    await _wait(stopping, LEASE_S / 3)
                    continue
                log.info("%s: this processor publishes %s", relay.name, self._settings.kafka_status_topic)
                try:
                    await relay.lead(stopping)
                finally:
                    self.metrics.lead(relay.shard, False)
                    with contextlib.suppress(LockError, RedisError, OSError):
                        await relay.lease.release()
                backoff.reset()
            except TooFewPartitions:
                raise
            except _TRANSIENT as exc:
                log.warning("%s: %r; starting again in %.1fs", relay.name, exc, backoff.next_delay)
                await backoff.wait(stopping)
            except Exception:  # a bug must not end status events for good: logged, retried
                log.exception(
                    "%s: unexpected failure; starting again in %.1fs", relay.name, backoff.next_delay
                )
                await backoff.wait(stopping)

    async def _acquire(self, relay: "_ShardRelay", stopping: asyncio.Event) -> bool:
        """Take `relay`'s lease if it is free: at once while this processor leads no shard, else
        after STAGGER_S for each shard it leads (see the module's doc)."""
        if await relay.lease.locked():
            return False
        async with self._turn:
            if delay := len(self.metrics.leading) * self._stagger_s:
                await _wait(stopping, delay)
            if stopping.is_set() or not await relay.lease.acquire(blocking=False):
                return False
            self.metrics.lead(relay.shard, True)
            return True


class _ShardRelay:
    """One shard's relay: its update stream published to its partitions while it holds its lease."""

    def __init__(self, settings: Settings, store: OrderStore, shard: int, metrics: RelayMetrics) -> None:
        self.shard = shard
        self.name = "relay" if settings.redis_shards == 1 else f"relay of shard {shard}"
        self.lease = store.lease(store.keys.relay_lease(shard), LEASE_S)
        self._settings = settings
        self._stream = store.stream(shard)
        self._metrics = metrics
        self._lag_ms = settings.processor_commit_lag_ms
        self._wait = store.wait
        self._unreplicated_logged = 0.0
        self._partitions: list[int] | None = None
        """The partitions this relay writes, chosen per order; None with one shard (by key)."""
        self._stalled_logged = 0.0
        self._resume_at: str | None = None
        """After a gap: the oldest entry left, the next to publish."""

    async def lead(self, stopping: asyncio.Event) -> None:
        """Publish while the lease is renewed: the renewal runs beside the publishing the whole
        time (a slow start included), and losing the lease stops the publishing (its open
        transaction is never committed)."""
        s = self._settings
        producer = new_producer(
            s,
            transactional_id=transactional_id(s, self.shard),
            transaction_timeout_ms=int(_TRANSACTION_TIMEOUT_S * 1000),
        )
        publishing = asyncio.create_task(self._publish(producer, stopping))
        renewing = asyncio.create_task(_renew(self.lease))
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
        partitions = await producer.partitions_for(s.kafka_status_topic)
        check_partitions(s, partitions)
        if s.redis_shards > 1:
            self._partitions = shard_partitions(partitions, s.redis_shards, self.shard)
        position = await last_published(s, self.shard)
        log.info("%s: going on after stream position %s", self.name, position)
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
        self._metrics.stall(self.shard, False)
        if not updates:
            return position, False
        if not await self._replicated(updates[-1].position):
            return position, False
        topic, partitions = self._settings.kafka_status_topic, self._partitions
        await producer.begin_transaction()
        deliveries: list[asyncio.Future[object]] = []
        try:
            for update in updates:
                value = _event(update)
                if value is None:
                    self._metrics.skipped.inc()
                    continue
                headers = [*record_headers(), (POSITION_HEADER, update.position.encode())]
                if update.trace:  # the transition's trace goes on with whoever consumes its event
                    headers.append(("traceparent", update.trace.encode()))
                partition = None if partitions is None else partition_of(update.order_id, partitions)
                deliveries.append(
                    await producer.send(
                        topic, value, key=update.order_id.encode(), partition=partition, headers=headers
                    )
                )
        finally:
            # Every delivery's outcome is taken (a fenced producer fails them all); the first
            # failure is raised.
            for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
        await producer.commit_transaction()
        self._metrics.transactions.inc()
        self._metrics.published.inc(len(deliveries))
        return updates[-1].position, len(updates) == BATCH

    async def _replicated(self, position: str) -> bool:
        """Whether the replicas hold every entry up to `position` (True at once without
        REDIS_WAIT_REPLICAS); a refusal is logged once a minute and shown by
        `processor_relay_unreplicated`."""
        if self._wait is None:
            return True
        try:
            await self._stream.confirm_replicated(position, self._wait)
        except NotReplicated as refused:
            self._metrics.wait_replicas(self.shard, True)
            if time.monotonic() - self._unreplicated_logged > 60:
                self._unreplicated_logged = time.monotonic()
                log.warning("%s: %s; publishing after it once replicas have it", self.name, refused)
            return False
        self._metrics.wait_replicas(self.shard, False)
        return True

    async def _lost_track(self, position: str) -> str | None:
        """`position` is not in the stream: trimmed away (the oldest entry left is the next to
        publish; logged as a gap) or ahead of it (None: stall)."""
        first = await self._stream.oldest()
        if first is not None and position_key(first) > position_key(position):
            self._metrics.gaps.inc()
            log.error(
                "%s: the update stream was trimmed past position %s before it was published "
                "(the relay fell further behind than REDIS_STREAM_MAXLEN): the transitions up to %s "
                "are missing from %s",
                self.name,
                position,
                first,
                self._settings.kafka_status_topic,
            )
            return first
        self._metrics.stall(self.shard, True)
        if time.monotonic() - self._stalled_logged > 60:
            self._stalled_logged = time.monotonic()
            log.error(
                "%s: %s holds position %s, which the update stream has not reached (Redis lost "
                "its data?): publishing nothing; rebuild the read model (make rebuild)",
                self.name,
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
