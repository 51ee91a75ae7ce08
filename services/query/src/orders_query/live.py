"""Live updates: one reader of the Redis update stream per process, fanned out to SSE clients.

`Hub` runs the only blocking `XREAD` of the process and hands each entry to
the subscriptions that want it (every feed, and the streams of that one
order), each through a bounded queue, without ever waiting for a client. A
client that falls behind (its queue is full) is dropped from the fan-out and
catches up on its own from the stream in Redis, then joins again; only when
the stream no longer holds its position (it was trimmed by the cap) is it
told to `reset`.

`LiveStream` is one client's stream. Its position is always the id of the
last stream entry it has accounted for, so with `Last-Event-ID` a reconnect
resumes with no gap and no repeat.

Catching up reads every entry between the client's position and the hub's, whoever they
concern. A customer's stream does so within a `CatchUpBudget`: so many entries at most (further
behind: the `reset` of a trimmed position), each page charged to the customer's rate limit.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from opentelemetry.trace import SpanKind
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from orders_contract.models import OrderStatus
from orders_readmodel.stream import Snapshot, Update, UpdateStream, position_key
from orders_runtime import tracing
from orders_runtime.backoff import Backoff
from orders_web.metrics import ServiceMetrics

__all__ = [
    "CatchUpBudget",
    "Event",
    "Hub",
    "LiveMetrics",
    "LiveStream",
    "Routed",
    "Subscription",
    "reset_frame",
]

log = logging.getLogger(__name__)

HEARTBEAT = b": keep-alive\n\n"
RETRY = b"retry: 2000\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """A transition, ready to send: its SSE frame is encoded once for every client."""

    position: str
    key: tuple[int, int]
    order_id: str
    user_id: int
    status: OrderStatus
    frame: bytes
    trace: str | None = None
    """The traceparent of the transition's span (tracing.py), for the send's span."""


def _frame(position: str, name: str, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (position.encode(), name.encode(), orjson.dumps(data))


def to_event(update: Update) -> Event:
    return Event(
        update.position,
        position_key(update.position),
        update.order_id,
        update.user_id,
        update.status,
        _frame(update.position, update.status, update.data),
        update.trace,
    )


def snapshot_frame(snapshot: Snapshot) -> bytes:
    """The order as it is now, as the event of its latest transition (an id-only frame if unknown)."""
    if snapshot.order is None or snapshot.position is None:
        return b"id: %s\n\n" % snapshot.head.encode()
    return _frame(snapshot.position, snapshot.order.status, snapshot.order.model_dump(mode="json"))


def reset_frame(stale: str, position: str | None) -> bytes:
    """Tells the client that the stream cannot give what follows `stale` (trimmed, or ahead)."""
    data = {
        "message": "The update stream does not hold this position (trimmed, or never handed out): "
        "re-read the order(s); "
        "the events that follow continue from the current state.",
        "lastEventId": stale,
    }
    frame = b"event: reset\ndata: %s\n\n" % orjson.dumps(data)
    return frame if position is None else b"id: %s\n" % position.encode() + frame


class Routed(Protocol):
    """What a stream's filter looks at: an `Event`, or an `Update` not encoded yet."""

    @property
    def user_id(self) -> int: ...
    @property
    def status(self) -> OrderStatus: ...


Match = Callable[[Routed], bool]


@dataclass(frozen=True, slots=True)
class CatchUpBudget:
    """How much of the update stream one catch-up of a stream may read."""

    entries: int
    """Entries read at most: a client further behind gets a `reset`, as for a trimmed position."""
    charge: Callable[[int], Awaitable[bool]]
    """Called with the number of entries each page read held (the rate limit's cost); False
    once the client is over its limit: the catch-up then reads no further page (a `reset`)."""


@dataclass(eq=False, slots=True)
class Subscription:
    order_id: str | None
    match: Match
    queue: "asyncio.Queue[Event | None]"
    start: str
    """The hub's position when it joined: every later entry goes through the queue."""
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


class Hub:
    """The process's one reader of the update stream and its fan-out to subscriptions."""

    def __init__(
        self,
        stream: UpdateStream,
        buffer: int = 1000,
        batch: int = 500,
        block_ms: int = 2000,
        metrics: LiveMetrics | None = None,
    ) -> None:
        self._stream = stream
        self._buffer = buffer
        self._batch = batch
        self._block_ms = block_ms
        self._feeds: set[Subscription] = set()
        self._orders: dict[str, set[Subscription]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.position = ""
        self.metrics = metrics or LiveMetrics()

    @property
    def subscribers(self) -> int:
        return len(self._feeds) + sum(len(subs) for subs in self._orders.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orders-update-hub")

    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        """Ends the reader. It is not cancelled in a read (redis-py can lose a cancellation
        there): it is told to stop and its connection is closed under it."""
        if self._task is None:
            return
        self._stopping = True
        await self._stream.redis.connection_pool.disconnect()
        done, _ = await asyncio.wait([self._task], timeout=self._block_ms / 1000 + 2)
        if not done:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
        self._task = None

    async def ready(self, timeout: float = 5.0) -> None:
        """Wait until the reader knows its position; a Redis ConnectionError (503) if it cannot."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise RedisConnectionError("the update stream cannot be read") from None

    def subscribe(self, order_id: str | None, match: Match) -> Subscription:
        """Join the fan-out now (call only after `ready`); entries after `start` arrive in the queue."""
        sub = Subscription(order_id, match, asyncio.Queue(self._buffer), self.position)
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

    async def _run(self) -> None:
        backoff, failed = Backoff(first=0.1, cap=5.0), False
        while not self.stopping():
            try:
                if not self._ready.is_set():
                    self.position = await self._stream.head()
                    self._ready.set()
                updates = await self._stream.wait_updates(self.position, self._batch, self._block_ms)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any failure
                if self.stopping():
                    return
                self.metrics.reader_errors.inc()
                log.warning(
                    "reading the update stream failed (retrying in %.1fs): %r", backoff.next_delay, exc
                )
                failed = True
                await backoff.wait()
                continue
            backoff.reset()
            if failed:
                # Whatever happened meanwhile, each client checks the stream from its own position.
                failed = False
                for sub in [*self._feeds, *(s for subs in self._orders.values() for s in subs)]:
                    self._drop(sub)
            for update in updates:
                if self._feeds or update.order_id in self._orders:  # encoded only if someone listens
                    self._dispatch(to_event(update))
            if updates:
                self.position = updates[-1].position


@dataclass(eq=False)
class LiveStream:
    """One client's stream of events: catch up from Redis when needed, then follow the hub.

    `last` is the position the client holds: everything up to it has been sent
    or did not match. `final` ends the stream after the first final status (an
    order's stream); `resnapshot` re-reads the order after a reset (None for feeds).
    """

    hub: Hub
    stream: UpdateStream
    order_id: str | None
    match: Match
    heartbeat: float
    final: bool = False
    budget: CatchUpBudget | None = None
    """What one catch-up may read (customers' streams); None: the whole stream if need be."""
    done: bool = False
    """Set once the client holds a final status (order streams end there)."""
    sub: Subscription = field(init=False)
    last: str = field(init=False, default="")
    counted: bool = field(init=False, default=False)
    """In the open-streams gauge: until the first `close` (which may come twice)."""

    def __post_init__(self) -> None:
        self.sub = self.hub.subscribe(self.order_id, self.match)
        self.hub.metrics.streams.inc()
        self.hub.metrics.open_streams.inc()
        self.counted = True

    def close(self) -> None:
        self.hub.unsubscribe(self.sub)
        if self.counted:
            self.counted = False
            self.hub.metrics.open_streams.dec()

    async def _catch_up(self) -> AsyncIterator[Event | bytes]:
        """Entries after `last` up to the subscription's start, from Redis; a reset if trimmed,
        or if `last` is ahead of the stream (a position it never handed out: followed as it
        is, it would filter out every event to come)."""
        until = self.sub.start
        if position_key(self.last) > position_key(until):
            # Ahead of the hub, which may lag the stream: ask the stream itself (None if ahead).
            if await self.stream.updates_after(self.last, self.last, 1) is None:
                yield await self._reset(until)
            return
        left = self.budget.entries if self.budget is not None else None
        while position_key(self.last) < position_key(until):
            if left is not None and left <= 0:
                yield await self._reset(until)  # too far behind for one catch-up
                return
            page = await self.stream.updates_after(self.last, until, 500 if left is None else min(500, left))
            if page is None:
                yield await self._reset(until)
                return
            if not page:
                break
            if self.budget is not None and left is not None:
                left -= len(page)
                if not await self.budget.charge(len(page)):
                    left = 0  # over the rate limit: this page is the last one read
            for update in page:
                self.last = update.position
                if self.order_id is not None and update.order_id != self.order_id:
                    continue  # the fan-out routes by order; catching up from Redis must too
                if self.match(update):  # encoded only when sent
                    yield to_event(update)
        if position_key(self.last) < position_key(until):
            self.last = until

    async def _reset(self, until: str) -> bytes:
        """The reset for a position the stream cannot continue from: on the feed, continue
        from `until`; on an order's stream, from the order as it is now (sent after it)."""
        self.hub.metrics.resets.inc()
        stale = self.last
        if self.order_id is None:
            self.last = until
            return reset_frame(stale, until)
        snapshot = await self.stream.snapshot(self.order_id)
        self.last = snapshot.position or snapshot.head
        self.done = snapshot.order is not None and snapshot.order.status.is_final
        return reset_frame(stale, None) + snapshot_frame(snapshot)

    def finished(self) -> bool:
        return self.done

    def _sent(self, event: Event) -> bytes:
        if tracing.ENABLED and event.trace:
            context = tracing.context_from_traceparent(event.trace)
            with tracing.span("sse send", event.order_id, kind=SpanKind.PRODUCER, context=context):
                pass
        self.last = event.position
        self.hub.metrics.events_sent.inc()
        self.done = self.final and event.status.is_final
        return event.frame

    async def frames(self, first: bytes, last: str, catch_up: bool = False) -> AsyncGenerator[bytes]:
        """The SSE body: `first` (already encoded), then the events after `last`, live."""
        self.last = last
        yield RETRY + first
        behind = catch_up
        while not self.finished():
            if behind:
                behind = False
                try:
                    async for item in self._catch_up():
                        yield item if isinstance(item, bytes) else self._sent(item)
                        if self.finished():
                            return
                except RedisError as exc:
                    # The answer has started: a refused or lost read can only end the stream.
                    # The client reconnects (`retry`) with Last-Event-ID and misses nothing.
                    log.warning("event stream ended, catching up failed: %s: %s", type(exc).__name__, exc)
                    return
            sub = self.sub
            if sub.behind and sub.queue.empty():
                self.sub = self.hub.subscribe(self.order_id, self.match)
                behind = True
                continue
            try:
                async with asyncio.timeout(self.heartbeat):
                    event = await sub.queue.get()
            except TimeoutError:
                yield HEARTBEAT
                continue
            if event is not None and event.key > position_key(self.last):
                yield self._sent(event)
