"""The consumer-group worker.

For every `order.placed` event it writes PLACED (unless the api wrote it through
already) and PROCESSING in one atomic Redis script, waits the processing delay
and writes COMPLETED in another: two round trips an order.
An order the api cancelled meanwhile stays CANCELLED; an event the api
answered 503 for (abandoned) creates nothing; `order.cancelled` events replay
the api's cancellation idempotently.

- Concurrency: every record is its own task, up to `processor_max_in_flight`
  at once; records with the same key (one order) run one after another, so
  one order's events stay in order while its delay holds up no other order.
- At least once, never skipping: offsets are committed explicitly, and only
  the contiguous prefix of a partition whose records are fully written
  (see offsets.py). A crash re-delivers; replays change nothing because each
  transition is idempotent in Redis.
- Transient Redis or Kafka errors are retried with backoff, forever: a record
  is never committed before it is written.
- Records that can never be processed (not JSON, wrong schema, unknown type,
  impossible transition) go to the dead-letter topic with the reason in headers, and the partition
  moves on.
- Rebalance and shutdown: in-flight records of the partitions being given up
  get `processor_drain_timeout_ms` to finish, what finished is committed, the
  rest is abandoned uncommitted for the next owner.
"""

import asyncio
import contextlib
import logging
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from orders_contract.events import EventError, OrderCancelledEvent, decode_event
from orders_contract.models import Order, OrderStatus
from orders_kafka.clients import ensure_topics, new_producer, stop_bounded
from orders_readmodel.store import OrderStore
from orders_runtime import tracing
from orders_runtime.logs import ORDER_ID
from orders_web.metrics import LATENCY_BUCKETS

from .deadletter import dead_letter_headers, reason_class
from .offsets import PartitionOffsets
from .settings import Settings

__all__ = ["Metrics", "Worker"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Record = ConsumerRecord[bytes, bytes]
_TRANSIENT = (RedisError, KafkaError, OSError)
_MAX_BACKOFF = 5.0
_COMMIT_TIMEOUT = 10.0

COMPLETION_BUCKETS = (*LATENCY_BUCKETS[6:], 30.0, 60.0, 300.0)
"""Seconds from an order's creation to its completion: the processing delay (200 ms by default)
and above."""


@dataclass
class Histogram:
    """Observations in cumulative-ready buckets (upper bounds `bounds`, then +Inf), a sum and a count:
    what a collector exports as a Prometheus histogram."""

    bounds: tuple[float, ...] = COMPLETION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(COMPLETION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """(upper bound, cumulative count) pairs, +Inf last."""
        cumulative, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append((bound, float(cumulative)))
        return out


@dataclass
class Metrics:
    received: int = 0
    completed: int = 0
    replayed: int = 0
    cancelled: int = 0
    found_cancelled: int = 0
    abandoned: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0
    commit_failures: int = 0
    in_flight: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)
    transitions: dict[OrderStatus, int] = field(default_factory=dict)
    """Transitions this process applied, by the status the order moved to."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Records dead-lettered, by the kind of reason (deadletter.reason_class)."""
    placed_to_completed: Histogram = field(default_factory=Histogram)
    """Seconds from each order's creation (the api accepting it) to its completion here."""

    def transitioned(self, status: OrderStatus) -> None:
        self.transitions[status] = self.transitions.get(status, 0) + 1


class Worker:
    def __init__(self, settings: Settings, store: OrderStore) -> None:
        self._settings = settings
        self._store = store
        self._delay = settings.processing_delay_ms / 1000
        self._max_in_flight = settings.processor_max_in_flight
        self._drain_timeout = settings.processor_drain_timeout_ms / 1000
        self._commit_lag = settings.processor_commit_lag_ms / 1000
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._tails: dict[tuple[TopicPartition, bytes], asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._commit_lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        """Per partition: the group's committed offset (read at assignment, then ours)."""
        self._reject = (
            re.compile(settings.processor_reject_products) if settings.processor_reject_products else None
        )
        self._late_commit: asyncio.Task[None] | None = None
        """A commit that outlived its wait (Kafka away), left to end in the background."""
        self.metrics = Metrics()
        self.on_redis_error: Callable[[], object] = lambda: None
        """Called for each failed Redis call (the health app counts them in its metrics)."""

    # -- lifecycle -----------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, then drain, commit and leave the group."""
        s = self._settings
        if not await self._until_stopped(stopping, partial(ensure_topics, s), "create topics"):
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=s.kafka_consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # Giving partitions up may take the drain plus a commit; the group waits that long.
            rebalance_timeout_ms=s.processor_drain_timeout_ms + int(_COMMIT_TIMEOUT * 1000) + 5000,
        )
        consumer.subscribe([s.kafka_orders_topic], listener=_Rebalance(self))
        dlq = new_producer(s)
        self._consumer, self._dlq = consumer, dlq
        committer: asyncio.Task[None] | None = None
        try:
            if await self._until_stopped(
                stopping, consumer.start, "join the consumer group"
            ) and await self._until_stopped(stopping, dlq.start, "start the dead-letter producer"):
                committer = asyncio.create_task(self._commit_periodically())
                await self._consume(consumer, stopping)
        finally:
            log.info("stopping: draining %d in-flight orders", self.metrics.in_flight)
            await self._release(set(self._offsets))
            if committer is not None:
                committer.cancel()
            await asyncio.gather(
                stop_bounded(consumer, "consumer stop"), stop_bounded(dlq, "dead-letter producer stop")
            )

    async def kafka_ready(self) -> None:
        """Kafka answers a metadata request."""
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        await self._consumer.topics()

    async def redis_ready(self) -> None:
        """Redis takes a small write (a full or read-only Redis still answers a PING, but the
        processor could write nothing)."""
        await self._store.check_writes("processor")

    async def _consume(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if self.metrics.in_flight >= self._max_in_flight:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 0.1)
                continue
            batches = await consumer.getmany(
                timeout_ms=100, max_records=self._max_in_flight - self.metrics.in_flight
            )
            for tp, records in batches.items():
                for record in records:
                    self._start(tp, record)

    async def _until_stopped(
        self, stopping: asyncio.Event, step: Callable[[], Awaitable[object]], what: str
    ) -> bool:
        """Retry a start-up step with backoff until it works (Kafka may come up later).

        False when asked to stop first.
        """
        backoff = 0.2
        while not stopping.is_set():
            try:
                await step()
                return True
            except _TRANSIENT as exc:
                log.warning("cannot %s yet (%r); retrying in %.1fs", what, exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        return False

    # -- one record ----------------------------------------------------------

    def _start(self, tp: TopicPartition, record: Record) -> None:
        tracker = self._offsets.setdefault(tp, PartitionOffsets())
        if not tracker.follows(record.offset):
            # The fetch position went back (an offset reset): those records come again and
            # are replayed idempotently; track them afresh, the old tracker's work is moot.
            log.warning("%s rewound to offset %d", tp, record.offset)
            tracker = self._offsets[tp] = PartitionOffsets()
        tracker.started(record.offset)
        key = (tp, record.key) if record.key is not None else None
        previous = self._tails.get(key) if key else None
        task = asyncio.create_task(self._handle(record, previous, tracker))
        if key:
            self._tails[key] = task
        self._tasks.setdefault(tp, set()).add(task)
        self.metrics.received += 1
        self.metrics.in_flight += 1
        if self.metrics.in_flight >= self._max_in_flight:
            self._room.clear()
        task.add_done_callback(partial(self._done, tp, key))

    def _done(
        self, tp: TopicPartition, key: tuple[TopicPartition, bytes] | None, task: asyncio.Task[None]
    ) -> None:
        self._tasks.get(tp, set()).discard(task)
        if key and self._tails.get(key) is task:
            del self._tails[key]
        self.metrics.in_flight -= 1
        self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("order task failed", exc_info=exc)

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: its end offset (as of the last fetch) minus the committed
        offset, i.e. records not yet processed and committed. A partition not fetched yet, or
        whose committed offset is unknown, is left out. A transaction's commit marker counts
        as one record until a later record is committed."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in self.metrics.assigned:
            end, committed = consumer.highwater(tp), self._committed.get(tp)
            if end is not None and committed is not None:
                lags[tp] = max(0, end - committed)
        return lags

    async def _read_committed(self, partitions: set[TopicPartition]) -> None:
        """Remember the group's committed offsets of newly assigned partitions (for `lag`)."""
        if self._consumer is None:
            return
        for tp in partitions:
            try:
                self._committed[tp] = await self._consumer.committed(tp) or 0
            except KafkaError as exc:
                log.warning("cannot read the committed offset of %s: %r", tp, exc)

    async def _handle(
        self, record: Record, previous: asyncio.Task[None] | None, tracker: PartitionOffsets
    ) -> None:
        if record.key is not None:
            ORDER_ID.set(record.key.decode(errors="replace"))
        if previous is not None:
            await asyncio.wait([previous])  # the same order's earlier event goes first
        await self._retrying(self._process, record)
        tracker.finished(record.offset)

    async def _process(self, record: Record) -> None:
        with tracing.span(
            "orders process",
            ORDER_ID.get(),
            kind=SpanKind.CONSUMER,
            context=tracing.context_from_headers(record.headers),
            attributes={
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
            },
        ):
            await self._process_in_span(record)

    async def _process_in_span(self, record: Record) -> None:
        try:
            event = decode_event(record.value)
            if record.key is not None and record.key != event.subject.encode():
                raise EventError("record key differs from the event's subject")
            if isinstance(event, OrderCancelledEvent):
                await self.cancel(event)
            else:
                order = event.data.to_order()
                if self._reject is not None and self._reject.search(order.product_name):
                    raise EventError(
                        "rejected by fault injection: PROCESSOR_REJECT_PRODUCTS matches the product"
                    )
                await self.advance(order, event.id)
        except EventError as exc:
            await self._dead_letter(record, str(exc))
        except _TRANSIENT as exc:
            if isinstance(exc, RedisError):
                self.on_redis_error()
            raise  # retried by the caller
        except Exception as exc:
            # A failure no retry can cure must not freeze the partition's commits.
            log.exception("cannot process %s[%d]@%d", record.topic, record.partition, record.offset)
            await self._dead_letter(record, f"processing failed: {exc!r}")

    async def advance(self, order: Order, event_id: str = "") -> None:
        """Drive one order as far as it goes: PLACED, PROCESSING, (delay), COMPLETED.

        Safe to repeat at any point: each step is applied at most once, so a
        replayed event resumes where the order stands and adds no history. An
        order the api cancelled stays CANCELLED (PROCESSING is refused), and an
        event the api abandoned (answered 503 for) creates nothing.
        """
        store = self._store
        with tracing.span("order start", order.order_id):  # created if need be, and PROCESSING
            started = await store.start(order, event_id, tracing.traceparent())
        if started.abandoned:
            log.info("order %s: event %s was answered 503 by the api; ignored", order.order_id, event_id)
            self.metrics.abandoned += 1
            return
        status = started.status
        if started.created:  # the api had not written it through: this call applied PLACED
            self.metrics.transitioned(OrderStatus.PLACED)
        if started.applied:
            self.metrics.transitioned(OrderStatus.PROCESSING)
        if status is OrderStatus.PROCESSING:
            if self._delay:
                with tracing.span("order work", order.order_id):
                    await asyncio.sleep(self._delay)
            with tracing.span("order complete", order.order_id):
                result = await store.transition(
                    order.order_id, OrderStatus.COMPLETED, trace=tracing.traceparent()
                )
            if result.applied:
                self.metrics.completed += 1
                self.metrics.transitioned(OrderStatus.COMPLETED)
                with contextlib.suppress(ValueError):
                    placed = datetime.fromisoformat(order.created_at).timestamp()
                    self.metrics.placed_to_completed.observe(max(0.0, time.time() - placed))
                return
        if status is OrderStatus.CANCELLED:
            self.metrics.found_cancelled += 1  # the api cancelled it before processing began
        else:
            self.metrics.replayed += 1

    async def cancel(self, event: OrderCancelledEvent) -> None:
        """Apply a cancellation the api already decided and recorded (normally a no-op replay)."""
        data = event.data
        with tracing.span("order cancel", data.order_id):
            result = await self._store.transition(
                data.order_id, OrderStatus.CANCELLED, data.cancelled_at, tracing.traceparent()
            )
        if result.applied:
            self.metrics.cancelled += 1
            self.metrics.transitioned(OrderStatus.CANCELLED)
        elif result.status is not OrderStatus.CANCELLED:
            raise EventError(f"impossible transition: order {data.order_id} is {result.status or 'unknown'}")

    async def _dead_letter(self, record: Record, reason: str) -> None:
        assert self._dlq is not None
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        with tracing.span("orders dead-letter", ORDER_ID.get(), kind=SpanKind.PRODUCER):
            delivery = await self._dlq.send(
                self._settings.kafka_dlq_topic,
                record.value,
                key=record.key,
                headers=dead_letter_headers(record, reason),
            )
            await delivery
        self.metrics.dead_lettered += 1
        kind = reason_class(reason)
        self.metrics.dead_letters[kind] = self.metrics.dead_letters.get(kind, 0) + 1

    async def _retrying(self, step: Callable[[Record], Awaitable[T]], record: Record) -> T:
        backoff = 0.05
        while True:
            try:
                return await step(record)
            except _TRANSIENT as exc:
                self.metrics.retries += 1
                log.warning(
                    "retrying %s[%d]@%d in %.2fs: %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    backoff,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    # -- commits and rebalances ----------------------------------------------

    async def _commit_periodically(self) -> None:
        interval = self._settings.processor_commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._commit()
            except Exception:
                log.exception("periodic commit failed; will try again")

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the end of the contiguous prefix of finished records.

        Periodic commits take only records written `processor_commit_lag_ms` ago,
        so a host crash that loses Redis's last second of AOF re-delivers them.
        Commits on release (`only`: rebalance, shutdown) take everything finished:
        Redis is still up then and its next fsync follows within a second.
        """
        if self._consumer is None:
            return
        written_before = None if only is not None else time.monotonic() - self._commit_lag
        # One commit at a time: a slow commit can never land after, and undo, a newer one.
        async with self._commit_lock:
            ready = {
                tp: (tracker, offset)
                for tp, tracker in list(self._offsets.items())
                if (only is None or tp in only) and (offset := tracker.to_commit(written_before)) is not None
            }
            if not ready:
                return
            offsets = {tp: offset for tp, (_, offset) in ready.items()}
            if self._late_commit is not None and not self._late_commit.done():
                # Never two commits at once: the late one could land after, and undo, this one.
                self.metrics.commit_failures += 1
                log.warning("commit skipped: the previous one still waits for Kafka")
                return
            # Not cancelled when the wait runs out: aiokafka shields the request inside a
            # task of its own, and cancelling the commit would leave that task's failure
            # (UnknownMemberIdError once the group dropped us while Kafka was paused)
            # unretrieved. It ends in the background, its outcome logged by _late_commit_done.
            commit = asyncio.create_task(self._consumer.commit(offsets))
            try:
                # Bounded: aiokafka retries a commit for as long as Kafka does not answer.
                await asyncio.wait({commit}, timeout=_COMMIT_TIMEOUT)
            finally:
                if not commit.done():
                    self._late_commit = commit
                    commit.add_done_callback(_late_commit_done)
            exc: BaseException | None = TimeoutError("no answer from Kafka")
            if commit.done() and not commit.cancelled():
                exc = commit.exception()
            if isinstance(exc, KafkaError | TimeoutError):
                # Kafka is away or a rebalance took the partitions: the records are
                # re-delivered and replayed idempotently, never skipped.
                self.metrics.commit_failures += 1
                log.warning("commit failed: %r", exc)
                return
            if exc is not None:
                raise exc
            for tracker, offset in ready.values():
                tracker.committed(offset)
            self._committed.update(offsets)
            self.metrics.commits += 1

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Give up partitions: let their in-flight records finish (bounded), commit, forget."""
        tasks = {task for tp in partitions for task in self._tasks.get(tp, ())}
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=self._drain_timeout)
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning("abandoned %d unfinished orders (not committed)", len(unfinished))
        await self._commit(partitions)
        for tp in partitions:
            self._offsets.pop(tp, None)
            self._tasks.pop(tp, None)
            self._committed.pop(tp, None)
        self.metrics.assigned -= partitions


def _late_commit_done(commit: "asyncio.Task[None]") -> None:
    """Retrieves the outcome of a commit that outlived its wait; its offsets were not marked
    committed, so the next commit sends them again."""
    if commit.cancelled():
        return
    if (exc := commit.exception()) is not None:
        log.warning("a commit that outlived its wait failed (its records will be re-delivered): %r", exc)
    else:
        log.info("a commit that outlived its wait landed")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked: %s", sorted(revoked))
            await self._worker._release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        self._worker.metrics.assigned |= set(assigned)
        await self._worker._read_committed(set(assigned))
