"""The live hub: the process's readers of the update streams, one per shard, fanned out to clients.

`Hub` runs one blocking `XREAD` per shard (each in a task of its own, on a connection of its
own: on a Redis Cluster one read cannot name the keys of two slots) and hands each entry to
the subscriptions that want it (every feed, and the streams of that one order), each through
a bounded queue, without ever waiting for a client. A subscription that falls behind (its
queue is full) is dropped from the fan-out: its client catches up from Redis (live.py).

The hub's position is one position per shard (`positions`); each event carries the hub's
positions right after it (`vector`), which is the feed's event id, and its own shard's
position, which is an order's stream's.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from orders_contract.models import OrderStatus
from orders_readmodel.stream import Update, UpdateStream, join_positions, position_key
from orders_runtime.backoff import Backoff
from orders_web.metrics import ServiceMetrics

from .frames import body, with_id

__all__ = ["Event", "Hub", "LiveMetrics", "Match", "Routed", "Subscription"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """A transition, ready to send: its frames are encoded once for every client."""

    position: str
    """The entry's position in its shard's update stream."""
    key: tuple[int, int]
    shard: int
    vector: tuple[str, ...]
    """The hub's position in every shard right after this entry (`position` in `shard`)."""
    order_id: str
    user_id: int
    status: OrderStatus
    body: bytes
    """The frame's lines but its `id` (frames.body), for a client that needs an id of its own."""
    frame: bytes
    """With `position` as its id: an order's stream's."""
    feed_frame: bytes
    """With `vector` joined as its id: a feed's (the same bytes as `frame` with one shard)."""
    trace: str | None = None
    """The traceparent of the transition's span (tracing.py), for the send's span."""


def _event(update: Update, shard: int, vector: tuple[str, ...]) -> Event:
    lines = body(update.status, update.data)
    frame = with_id(update.position, lines)
    feed_frame = frame if len(vector) == 1 else with_id(join_positions(list(vector)), lines)
    return Event(
        update.position,
        position_key(update.position),
        shard,
        vector,
        update.order_id,
        update.user_id,
        update.status,
        lines,
        frame,
        feed_frame,
        update.trace,
    )


class Routed(Protocol):
    """What a stream's filter looks at: an `Event`, or an `Update` not encoded yet."""

    @property
    def user_id(self) -> int: ...
    @property
    def status(self) -> OrderStatus: ...


Match = Callable[[Routed], bool]


@dataclass(eq=False, slots=True)
class Subscription:
    order_id: str | None
    match: Match
    queue: "asyncio.Queue[Event | None]"
    start: tuple[str, ...]
    """The hub's position in every shard when it joined: every later entry goes through the queue."""
    behind: bool = False
    """Dropped from the fan-out (queue full, or the reader lost Redis): catch up from Redis."""


class LiveMetrics:
    """The live streams' metrics, as prometheus_client objects of the app's `ServiceMetrics`,
    so that they are summed over the workers when the query runs several (a standalone
    registry's without one: tests)."""

    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        metrics = metrics or ServiceMetrics("query")
        self.open_streams = metrics.gauge("live_subscribers", "Event streams open now.")
        self.streams = metrics.counter("live_streams", "Event streams opened.")
        self.events_sent = metrics.counter("live_events_sent", "Events sent to clients.")
        self.fell_behind = metrics.counter(
            "live_fell_behind", "Times a client's buffer filled up and it caught up from Redis."
        )
        self.resets = metrics.counter("live_resets", "Reset events sent (position trimmed).")
        self.reader_errors = metrics.counter("live_reader_errors", "Failed stream reads.")


async def _close_under(redis: Redis) -> None:
    """Closes a client's connections, those in a blocking read too (which then fail)."""
    pool = getattr(redis, "connection_pool", None)
    if pool is not None:
        await pool.disconnect()
    else:  # a RedisCluster: a pool per node, all closed by aclose
        await redis.aclose()


class Hub:
    """The process's readers of the update streams (`streams`: every shard's, in shard order)
    and their fan-out to subscriptions."""

    def __init__(
        self,
        streams: Sequence[UpdateStream],
        buffer: int = 1000,
        batch: int = 500,
        block_ms: int = 2000,
        metrics: LiveMetrics | None = None,
    ) -> None:
        if [stream.shard for stream in streams] != list(range(len(streams))) or not streams:
            raise ValueError("the hub reads every shard's stream, in shard order")
        self._streams = tuple(streams)
        self._buffer = buffer
        self._batch = batch
        self._block_ms = block_ms
        self._feeds: set[Subscription] = set()
        self._orders: dict[str, set[Subscription]] = {}
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.positions = [""] * len(streams)
        """Each shard's position: the last entry handed out ('' until its reader knows it)."""
        self.metrics = metrics or LiveMetrics()

    @property
    def shards(self) -> int:
        return len(self._streams)

    @property
    def subscribers(self) -> int:
        return len(self._feeds) + sum(len(subs) for subs in self._orders.values())

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(shard), name=f"orders-update-hub-{shard}")
            for shard in range(self.shards)
        ]

    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        """Ends the readers. They are not cancelled in a read (redis-py can lose a cancellation
        there): they are told to stop and their connections are closed under them."""
        if not self._tasks:
            return
        self._stopping = True
        for redis in {id(stream.redis): stream.redis for stream in self._streams}.values():
            await _close_under(redis)
        _, pending = await asyncio.wait(self._tasks, timeout=self._block_ms / 1000 + 2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        self._tasks = []

    async def ready(self, timeout: float = 5.0) -> None:
        """Wait until every reader knows its position; a Redis ConnectionError (503) if one cannot."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise RedisConnectionError("the update stream cannot be read") from None

    def subscribe(self, order_id: str | None, match: Match) -> Subscription:
        """Join the fan-out now (call only after `ready`); entries after `start` arrive in the queue."""
        sub = Subscription(order_id, match, asyncio.Queue(self._buffer), tuple(self.positions))
        if order_id is None:
            self._feeds.add(sub)
        else:
            self._orders.setdefault(order_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.order_id is None:
            self._feeds.discard(sub)
            return
        subs = self._orders.get(sub.order_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._orders[sub.order_id]

    def _drop(self, sub: Subscription) -> None:
        self.unsubscribe(sub)
        sub.behind = True
        self.metrics.fell_behind.inc()
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)  # wakes a waiting client; a full queue wakes it anyway

    def _dispatch(self, event: Event) -> None:
        for sub in [*self._feeds, *self._orders.get(event.order_id, ())]:
            if sub.match(event):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self._drop(sub)

    def _drop_readers_of(self, shard: int) -> None:
        """After a failed read of `shard`'s stream, whatever happened meanwhile, each client that
        follows it checks the stream from its own position: every feed, the shard's orders' streams."""
        keys = self._streams[shard].keys
        of_shard = (
            sub for order_id, subs in self._orders.items() if keys.shard_of(order_id) == shard for sub in subs
        )
        for sub in [*self._feeds, *of_shard]:
            self._drop(sub)

    def _hand_out(self, shard: int, updates: list[Update]) -> None:
        if not updates:
            return
        if not self._feeds and not self._orders:  # encoded only if someone listens
            self.positions[shard] = updates[-1].position
            return
        for update in updates:
            self.positions[shard] = update.position
            if self._feeds or update.order_id in self._orders:
                self._dispatch(_event(update, shard, tuple(self.positions)))

    async def _run(self, shard: int) -> None:
        stream = self._streams[shard]
        backoff, failed = Backoff(first=0.1, cap=5.0), False
        while not self.stopping():
            try:
                if not self.positions[shard]:
                    self.positions[shard] = await stream.head()
                    if all(self.positions):
                        self._ready.set()
                updates = await stream.wait_updates(self.positions[shard], self._batch, self._block_ms)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any failure
                if self.stopping():
                    return
                self.metrics.reader_errors.inc()
                log.warning(
                    "reading the update stream of shard %d failed (retrying in %.1fs): %r",
                    shard,
                    backoff.next_delay,
                    exc,
                )
                failed = True
                await backoff.wait()
                continue
            backoff.reset()
            if failed:
                failed = False
                self._drop_readers_of(shard)
            self._hand_out(shard, updates)
