"""A keyed consumer: Kafka records handed to a handler, in order per key, committed once handled.

Generic: it knows records, keys and offsets, never what a record means. The handler is
an async function of one record; the record is handled when it returns.

- Concurrency: every record is its own task, up to `max_in_flight` at once (fetching
  waits beyond); records with the same key run one after another, so one key's records
  stay in order while a slow one holds up no other key.
- At least once, never skipping: offsets are committed explicitly, and only the
  contiguous prefix of a partition whose records are handled (see offsets.py). A crash
  re-delivers; the handler must make a replay harmless.
- A handler that raises one of `retry_on` is called again with backoff, forever: a
  record is never committed before it is handled. Any other exception is the handler's
  bug (it should deal with every record it cannot handle): logged, and the record stays
  unhandled, so its partition commits nothing past it until it is re-delivered.
- Commits: periodic ones take only records handled `commit_lag` seconds ago (what the
  handler wrote may need that long to be durable); giving partitions up takes all.
- Rebalance and shutdown: in-flight records of the partitions being given up get
  `drain_timeout` seconds to finish, what finished is committed, the rest is abandoned
  uncommitted for the next owner.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from orders_kafka.clients import stop_bounded
from orders_runtime.backoff import Backoff

from .offsets import PartitionOffsets

__all__ = ["ConsumerConfig", "ConsumerMetrics", "Handler", "KeyedConsumer", "Record", "until_stopped"]

log = logging.getLogger(__name__)

Record = ConsumerRecord[bytes, bytes]
Handler = Callable[[Record], Awaitable[None]]
_COMMIT_TIMEOUT = 10.0
_Chain = tuple[TopicPartition, bytes]


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap_servers: str
    group_id: str
    topic: str
    max_in_flight: int
    commit_interval: float
    """Seconds between periodic commits."""
    commit_lag: float
    """Seconds a handled record waits before a periodic commit takes it."""
    drain_timeout: float
    """Seconds in-flight records of partitions being given up may take to finish."""


@dataclass(frozen=True)
class ConsumerMetrics:
    received: Counter
    retries: Counter
    commits: Counter
    commit_failures: Counter
    in_flight: Gauge
    assigned_partitions: Gauge


async def until_stopped(stopping: asyncio.Event, step: Callable[[], Awaitable[object]], what: str) -> bool:
    """Retry a start-up step with backoff until it works (Kafka may come up later); False when
    asked to stop first."""
    backoff = Backoff(first=0.2, cap=5.0)
    while not stopping.is_set():
        try:
            await step()
            return True
        except (KafkaError, OSError) as exc:
            log.warning("cannot %s yet (%r); retrying in %.1fs", what, exc, backoff.next_delay)
            await backoff.wait(stopping)
    return False


class KeyedConsumer:
    def __init__(
        self,
        config: ConsumerConfig,
        handler: Handler,
        metrics: ConsumerMetrics,
        retry_on: tuple[type[BaseException], ...] = (KafkaError, OSError),
    ) -> None:
        self._config = config
        self._handler = handler
        self.metrics = metrics
        self._retry_on = retry_on
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._tails: dict[_Chain, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._commit_lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        """Per partition: the group's committed offset (read at assignment, then ours)."""
        self._late_commit: asyncio.Task[None] | None = None
        """A commit that outlived its wait (Kafka away), left to end in the background."""
        self.assigned: set[TopicPartition] = set()
        self._committer: asyncio.Task[None] | None = None

    # -- lifecycle: start, consume, release, stop ----------------------------

    async def start(self) -> None:
        """Join the group (the same client on each try)."""
        if self._consumer is None:
            self._consumer = self._new_client()
        await self._consumer.start()

    def _new_client(self) -> AIOKafkaConsumer:
        c = self._config
        consumer = AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers,
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # Giving partitions up may take the drain plus a commit; the group waits that long.
            rebalance_timeout_ms=round((c.drain_timeout + _COMMIT_TIMEOUT + 5) * 1000),
        )
        consumer.subscribe([c.topic], listener=_Rebalance(self))
        return consumer

    async def consume(self, stopping: asyncio.Event) -> None:
        """Fetch and hand out records, committing periodically (until `release_all`), until
        `stopping` is set."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("consumer not started")
        self._committer = asyncio.create_task(self._commit_periodically())
        limit = self._config.max_in_flight
        while not stopping.is_set():
            if self._in_flight >= limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 0.1)
                continue
            batches = await consumer.getmany(timeout_ms=100, max_records=limit - self._in_flight)
            for tp, records in batches.items():
                for record in records:
                    self._start(tp, record)

    async def release_all(self) -> None:
        """Before stopping: drain (bounded), commit and forget every partition; then no more
        periodic commits (one under way finishes first: the release waits for it)."""
        log.info("stopping: draining %d in-flight records", self._in_flight)
        try:
            await self._release(set(self._offsets))
        finally:
            if self._committer is not None:
                self._committer.cancel()

    async def stop(self) -> None:
        """Leave the group (bounded)."""
        if self._consumer is not None:
            await stop_bounded(self._consumer, "consumer stop")

    async def ready(self) -> None:
        """Kafka answers a metadata request."""
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        await self._consumer.topics()

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: its end offset (as of the last fetch) minus the committed
        offset, i.e. records not yet handled and committed. A partition not fetched yet, or
        whose committed offset is unknown, is left out. A transaction's commit marker counts
        as one record until a later record is committed."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in self.assigned:
            end, committed = consumer.highwater(tp), self._committed.get(tp)
            if end is not None and committed is not None:
                lags[tp] = max(0, end - committed)
        return lags

    # -- one record ----------------------------------------------------------

    def _start(self, tp: TopicPartition, record: Record) -> None:
        tracker = self._offsets.setdefault(tp, PartitionOffsets())
        if not tracker.follows(record.offset):
            # The fetch position went back (an offset reset): those records come again and
            # are replayed; track them afresh, the old tracker's work is moot.
            log.warning("%s rewound to offset %d", tp, record.offset)
            tracker = self._offsets[tp] = PartitionOffsets()
        tracker.started(record.offset)
        chain = (tp, record.key) if record.key is not None else None
        previous = self._tails.get(chain) if chain else None
        task = asyncio.create_task(self._run(record, previous, tracker))
        if chain:
            self._tails[chain] = task
        self._tasks.setdefault(tp, set()).add(task)
        self.metrics.received.inc()
        self._in_flight += 1
        self.metrics.in_flight.inc()
        if self._in_flight >= self._config.max_in_flight:
            self._room.clear()
        task.add_done_callback(partial(self._done, tp, chain))

    def _done(self, tp: TopicPartition, chain: _Chain | None, task: asyncio.Task[None]) -> None:
        self._tasks.get(tp, set()).discard(task)
        if chain and self._tails.get(chain) is task:
            del self._tails[chain]
        self._in_flight -= 1
        self.metrics.in_flight.dec()
        self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("record task failed", exc_info=exc)

    async def _run(
        self, record: Record, previous: asyncio.Task[None] | None, tracker: PartitionOffsets
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # the same key's earlier record goes first
        await self.handle(record)
        tracker.finished(record.offset)

    async def handle(self, record: Record) -> None:
        """Call the handler until it returns: again, with backoff, after each error of
        `retry_on`; any other error is raised."""
        backoff = Backoff(first=0.05, cap=5.0)
        while True:
            try:
                await self._handler(record)
                return
            except self._retry_on as exc:
                self.metrics.retries.inc()
                log.warning(
                    "retrying %s[%d]@%d in %.2fs: %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    backoff.next_delay,
                    type(exc).__name__,
                    exc,
                )
                await backoff.wait()

    # -- commits and rebalances ----------------------------------------------

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.commit_interval)
            try:
                await self._commit()
            except Exception:
                log.exception("periodic commit failed; will try again")

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the end of the contiguous prefix of handled records.

        Periodic commits take only records handled `commit_lag` ago, so a host crash
        that loses the last second of what the handler wrote re-delivers them.
        Commits on release (`only`: rebalance, shutdown) take everything handled.
        """
        if self._consumer is None:
            return
        written_before = None if only is not None else time.monotonic() - self._config.commit_lag
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
                self.metrics.commit_failures.inc()
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
                # re-delivered and handled again, never skipped.
                self.metrics.commit_failures.inc()
                log.warning("commit failed: %r", exc)
                return
            if exc is not None:
                raise exc
            for tracker, offset in ready.values():
                tracker.committed(offset)
            self._committed.update(offsets)
            self.metrics.commits.inc()

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Give up partitions: let their in-flight records finish (bounded), commit, forget."""
        tasks = {task for tp in partitions for task in self._tasks.get(tp, ())}
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=self._config.drain_timeout)
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning("abandoned %d unfinished records (not committed)", len(unfinished))
        await self._commit(partitions)
        for tp in partitions:
            self._offsets.pop(tp, None)
            self._tasks.pop(tp, None)
            self._committed.pop(tp, None)
        self.assigned -= partitions
        self.metrics.assigned_partitions.set(len(self.assigned))

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        """Take new partitions; remember their committed offsets (for `lag`)."""
        self.assigned |= partitions
        self.metrics.assigned_partitions.set(len(self.assigned))
        if self._consumer is None:
            return
        for tp in partitions:
            try:
                self._committed[tp] = await self._consumer.committed(tp) or 0
            except KafkaError as exc:
                log.warning("cannot read the committed offset of %s: %r", tp, exc)


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
    def __init__(self, consumer: KeyedConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked: %s", sorted(revoked))
            await self._consumer._release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        await self._consumer._assigned(set(assigned))
