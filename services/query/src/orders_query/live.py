"""One client's live stream: catch up from Redis when needed, then follow the hub (hub.py).

`LiveStream` is a feed (every transition, filtered) or one order's stream. Its position is
always, in each shard it follows, the position of the last entry it has accounted for
(sent, or did not match): a feed follows every shard, and its event ids are those positions
joined (stream.join_positions); an order's stream follows its order's shard, and its ids are
that shard's positions. So with `Last-Event-ID` a reconnect resumes with no gap and no repeat.

A client that falls behind (the hub dropped its subscription) catches up on its own from the
streams in Redis, then joins again; only when a stream no longer holds its position (it was
trimmed by the cap, or never handed out) is it told to `reset`.

Catching up reads, shard after shard, every entry between the client's position and the
hub's, whoever they concern. A customer's stream does so within a `CatchUpBudget`: so many
entries at most, over all shards (further behind: the `reset` of a trimmed position), each
page charged to the customer's rate limit.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from orders_readmodel.stream import Update, UpdateStream, join_positions, position_key, split_positions
from orders_runtime import tracing

from .frames import HEARTBEAT, RETRY, frame, reset_frame, snapshot_frame, with_id
from .hub import Event, Hub, Match, Subscription

__all__ = ["CatchUpBudget", "LiveStream"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CatchUpBudget:
    """How much of the update streams one catch-up of a stream may read."""

    entries: int
    """Entries read at most: a client further behind gets a `reset`, as for a trimmed position."""
    charge: Callable[[int], Awaitable[bool]]
    """Called with the number of entries each page read held (the rate limit's cost); False
    once the client is over its limit: the catch-up then reads no further page (a `reset`)."""


@dataclass(eq=False)
class LiveStream:
    """One client's stream of events: catch up from Redis when needed, then follow the hub.

    `last` is the position the client holds in each shard of `streams`: everything up to it
    has been sent or did not match. `final` ends the stream after the first final status (an
    order's stream); an order's stream re-reads the order after a reset.
    """

    hub: Hub
    streams: Sequence[UpdateStream]
    """The shards it follows, in shard order: every shard's stream for a feed (`order_id`
    None), the order's shard's for an order's stream."""
    order_id: str | None
    match: Match
    heartbeat: float
    final: bool = False
    budget: CatchUpBudget | None = None
    """What one catch-up may read (customers' streams); None: the whole streams if need be."""
    done: bool = False
    """Set once the client holds a final status (order streams end there)."""
    sub: Subscription = field(init=False)
    last: tuple[str, ...] = field(init=False, default=())
    counted: bool = field(init=False, default=False)
    """In the open-streams gauge: until the first `close` (which may come twice)."""
    ahead: bool = field(init=False, default=False)
    """A feed ahead of the hub in a shard (positions the stream holds but the hub has not read
    yet): its ids are then its own, not the hub's (`Event.vector`), until the hub is past them."""

    def __post_init__(self) -> None:
        self.streams = tuple(self.streams)
        shards = [stream.shard for stream in self.streams]
        if self.order_id is None and shards != list(range(self.hub.shards)):
            raise ValueError("a feed follows every shard's stream, in shard order")
        if self.order_id is not None and shards != [self.streams[0].keys.shard_of(self.order_id)]:
            raise ValueError("an order's stream follows its order's shard's stream")
        self.sub = self.hub.subscribe(self.order_id, self.match)
        self.hub.metrics.streams.inc()
        self.hub.metrics.open_streams.inc()
        self.counted = True

    @property
    def position(self) -> str:
        """The position the client holds, as an event id."""
        return join_positions(self.last)

    @property
    def start(self) -> str:
        """The hub's position when the stream (last) joined it, as an event id."""
        return join_positions(self._until())

    def _until(self) -> tuple[str, ...]:
        start = self.sub.start
        return start if self.order_id is None else (start[self.streams[0].shard],)

    def close(self) -> None:
        self.hub.unsubscribe(self.sub)
        if self.counted:
            self.counted = False
            self.hub.metrics.open_streams.dec()

    def _move(self, index: int, position: str) -> None:
        self.last = (*self.last[:index], position, *self.last[index + 1 :])

    async def _catch_up(self) -> AsyncIterator[bytes | tuple[Update, bytes]]:
        """In each shard, the entries after `last` up to the subscription's start, from Redis; a
        reset if a shard's stream was trimmed past `last`, or if `last` is ahead of it (a
        position it never handed out: followed as it is, it would filter out every event to come)."""
        until = self._until()
        ahead: set[int] = set()
        stale = False
        for i, stream in enumerate(self.streams):
            if position_key(self.last[i]) > position_key(until[i]):
                # Ahead of the hub, which may lag the stream: ask the stream itself (None if ahead).
                if await stream.updates_after(self.last[i], self.last[i], 1) is None:
                    stale = True
                else:
                    ahead.add(i)
        self.ahead = bool(ahead)
        if stale:
            yield await self._reset(until, ahead)
            return
        left = self.budget.entries if self.budget is not None else None
        for i, stream in enumerate(self.streams):
            while i not in ahead and position_key(self.last[i]) < position_key(until[i]):
                if left is not None and left <= 0:
                    yield await self._reset(until, ahead)  # too far behind for one catch-up
                    return
                size = 500 if left is None else min(500, left)
                page = await stream.updates_after(self.last[i], until[i], size)
                if page is None:
                    yield await self._reset(until, ahead)
                    return
                if not page:
                    break
                if self.budget is not None and left is not None:
                    left -= len(page)
                    if not await self.budget.charge(len(page)):
                        left = 0  # over the rate limit: this page is the last one read
                for update in page:
                    self._move(i, update.position)
                    if self.order_id is not None and update.order_id != self.order_id:
                        continue  # the fan-out routes by order; catching up from Redis must too
                    if self.match(update):  # encoded only when sent
                        yield update, frame(self.position, update.status, update.data)
            if position_key(self.last[i]) < position_key(until[i]):
                self._move(i, until[i])

    async def _reset(self, until: tuple[str, ...], ahead: set[int]) -> bytes:
        """The reset for a position the streams cannot continue from: on the feed, continue
        from `until` (but in the shards `ahead`, valid positions the hub has not reached); on
        an order's stream, from the order as it is now (sent after it)."""
        self.hub.metrics.resets.inc()
        stale = self.position
        if self.order_id is None:
            kept = zip(self.last, until, strict=True)
            self.last = tuple(mine if i in ahead else hub for i, (mine, hub) in enumerate(kept))
            return reset_frame(stale, self.position)
        snapshot = await self.streams[0].snapshot(self.order_id)
        self.last = (snapshot.position or snapshot.head,)
        self.done = snapshot.order is not None and snapshot.order.status.is_final
        return reset_frame(stale, None) + snapshot_frame(snapshot)

    def finished(self) -> bool:
        return self.done

    def _sent(self, sent: Event | Update, data: bytes) -> bytes:
        if tracing.ENABLED and sent.trace:
            context = tracing.context_from_traceparent(sent.trace)
            with tracing.span("sse send", sent.order_id, kind=SpanKind.PRODUCER, context=context):
                pass
        self.hub.metrics.events_sent.inc()
        self.done = self.final and sent.status.is_final
        return data

    def _follow(self, event: Event) -> bytes | None:
        """The frame of an event of the hub for this client; None for one it holds already."""
        index = event.shard if self.order_id is None else 0
        if event.key <= position_key(self.last[index]):
            return None
        if self.order_id is not None:
            self.last = (event.position,)
            return self._sent(event, event.frame)
        if self.ahead:
            mine = tuple(max(a, b, key=position_key) for a, b in zip(self.last, event.vector, strict=True))
            self.ahead = mine != event.vector
            if self.ahead:
                self.last = mine
                return self._sent(event, with_id(self.position, event.body))
        self.last = event.vector
        return self._sent(event, event.feed_frame)

    async def frames(self, first: bytes, last: str, catch_up: bool = False) -> AsyncGenerator[bytes]:
        """The SSE body: `first` (already encoded), then the events after `last` (an id of this
        stream's: a position in each of its shards), live."""
        self.last = tuple(split_positions(last, len(self.streams)))
        until = self._until()
        self.ahead = any(position_key(a) > position_key(b) for a, b in zip(self.last, until, strict=True))
        yield RETRY + first
        behind = catch_up
        while not self.finished():
            if behind:
                behind = False
                try:
                    async for item in self._catch_up():
                        yield item if isinstance(item, bytes) else self._sent(*item)
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
            if event is not None and (sent := self._follow(event)) is not None:
                yield sent
