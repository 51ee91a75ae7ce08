"""The update stream: positions in it, its entries, and the reads that follow a position.

Every transition the store applies appends one entry to a capped Redis stream
(`Keys.updates`, one per shard) with the order as it was right after it, and records the
entry's id, its position, in the order's history. A live client holds a
position and asks for what comes after it; `UpdateStream` is every read that
does so on one shard's stream, and the only code that reads the streams.

A position in every shard's stream at once (a feed's `Last-Event-ID`) is the shards'
positions joined with `_` in shard order (`join_positions`); with one shard it is that
shard's position, as it always was.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import HistoryEntry, Order, OrderStatus, order_json

from .replication import Wait, confirm_on_node

__all__ = [
    "START",
    "InvalidPosition",
    "Snapshot",
    "Update",
    "UpdateStream",
    "join_positions",
    "newest_position",
    "position_key",
    "split_positions",
]

log = logging.getLogger(__name__)


class InvalidPosition(ValueError):
    """Not a position in the update stream (a Redis stream entry id)."""


START = "0-0"
"""The position before the first entry of the update stream."""


_POSITION = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?", re.ASCII)
_MAX_PART = 2**64 - 1


def position_key(position: str) -> tuple[int, int]:
    """A stream position (`<ms>-<seq>`, each part below 2**64) as a pair that compares like
    the positions do; InvalidPosition for anything else."""
    match = _POSITION.fullmatch(position)
    key = (int(match[1]), int(match[2] or 0)) if match else (-1, -1)
    if not (0 <= key[0] <= _MAX_PART and 0 <= key[1] <= _MAX_PART):
        raise InvalidPosition(f"{position!r} is not a stream position")
    return key


def join_positions(positions: Sequence[str]) -> str:
    """Positions in each shard's stream, in shard order, as one text (a feed's event id)."""
    return "_".join(positions)


def split_positions(text: str, shards: int) -> list[str]:
    """`join_positions`' text back as each shard's position; InvalidPosition unless it holds
    `shards` valid positions."""
    positions = text.split("_")
    if len(positions) != shards:
        raise InvalidPosition(f"{text!r} is not a position in {shards} shards' streams")
    for position in positions:
        position_key(position)
    return positions


def newest_position(reply: Any) -> str:
    """The position of an `XREVRANGE <stream> + - COUNT 1` reply: the newest entry's, START
    when the stream is empty (or does not exist)."""
    return str(reply[0][0]) if reply else START


@dataclass(frozen=True, slots=True)
class Update:
    """One entry of the update stream: a transition and the order as it was right after it."""

    position: str
    order_id: str
    user_id: int
    status: OrderStatus
    version: int
    order_text: str | None
    """The order's hash right after the transition, as JSON text (read it as `data`); None
    only for entries written before the stream carried the order."""
    at: str | None = None
    """When the transition happened, as the order's time fields write it."""
    trace: str | None = None
    """The W3C traceparent of the span that made the transition (None when not traced)."""

    @property
    def data(self) -> dict[str, Any]:
        """The order in the API's JSON form as of this transition (the transition's own
        fields only, for an entry without the order, or whose order cannot be read: only
        our functions write the stream, so never). Decoded when asked: a hub that nobody
        listens to reads every entry but decodes none."""
        if self.order_text:
            try:
                return order_json(orjson.loads(self.order_text))
            except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, bad field
                log.warning("update %s carries an unreadable order (sent without it): %r", self.position, exc)
        return {
            "orderId": self.order_id,
            "userId": self.user_id,
            "status": self.status,
            "version": self.version,
        }


def _updates(entries: list[tuple[str, dict[str, str]]]) -> list[Update]:
    """Stream entries as updates; an entry that is not a transition is skipped, with a warning."""
    updates = []
    for position, fields in entries:
        try:
            updates.append(
                Update(
                    position,
                    fields["orderId"],
                    int(fields["userId"]),
                    OrderStatus(fields["status"]),
                    int(fields["version"]),
                    fields.get("order"),
                    fields.get("at"),
                    fields.get("trace"),
                )
            )
        except (KeyError, ValueError) as exc:
            log.warning("update stream entry %s is not a transition (skipped): %r", position, exc)
    return updates


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An order read together with the stream's positions, in one atomic step."""

    order: Order | None
    position: str | None
    """The stream entry of the order's latest transition (None for an unknown order)."""
    head: str
    """The stream's newest entry when the order was read: every later transition comes after it."""


class UpdateStream:
    """The reads that follow a position in the update stream of `keys`' shard `shard`.

    The client must decode responses. `wait_updates` blocks a connection while
    it waits: give it a client of its own (the other reads do not block).
    """

    def __init__(self, redis: "Redis", keys: Keys, shard: int = 0) -> None:
        self.redis = redis
        self.keys = keys
        self.shard = shard
        self.name = keys.updates(shard)

    async def head(self) -> str:
        """The position of the stream's newest entry (START when it is empty): read after it
        to see only what comes next."""
        return newest_position(await self.redis.xrevrange(self.name, count=1))

    async def snapshot(self, order_id: str) -> Snapshot:
        """The order as it is now, the position of its latest transition and the stream's head."""
        if self.keys.shard_of(order_id) != self.shard:
            raise ValueError(f"order {order_id} is not in shard {self.shard}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.order(order_id))
            pipe.lindex(self.keys.history(order_id), -1)
            pipe.xrevrange(self.name, count=1)
            fields, last, newest = await pipe.execute()
        entry = HistoryEntry.model_validate_json(last) if last else None
        head = newest_position(newest)
        order = Order.model_validate(fields) if fields else None
        return Snapshot(order, (entry.position or head) if entry else None, head)

    async def updates_after(self, after: str, until: str = "+", count: int = 500) -> list[Update] | None:
        """Up to `count` entries after `after`, up to `until` included, oldest first.

        None when the stream can no longer give everything after `after`: it was
        trimmed past that position (the cap), or `after` is ahead of the stream.
        """
        after_key = position_key(after)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(self.name)
            pipe.xrange(self.name, f"({after}", until, count=count)
            info, entries = await pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):  # no stream yet
            return [] if after_key == position_key(START) else None
        if after_key > position_key(str(info["last-generated-id"])):
            return None
        first = info.get("first-entry")
        trimmed = int(info.get("entries-added", -1)) != int(info["length"])
        if trimmed and first and position_key(str(first[0])) > after_key:
            return None
        if isinstance(entries, Exception):
            raise entries
        return _updates(entries)

    async def entries_from(self, start: str, until: str = "+", count: int = 500) -> list[Update]:
        """Up to `count` entries from `start` (included) up to `until`, oldest first, whatever
        the cap trimmed before `start` (the status relay, going on after a gap)."""
        entries: Any = await self.redis.xrange(self.name, start, until, count=count)
        return _updates(entries)

    async def wait_updates(self, after: str, count: int = 500, block_ms: int = 5000) -> list[Update]:
        """Entries after `after`, oldest first, waiting up to `block_ms` for the first ([] if
        none came)."""
        answer: Any = await self.redis.xread({self.name: after}, count=count, block=block_ms)
        if not answer:
            return []
        _, entries = answer[0]  # RESP2: [[stream, entries]]
        return _updates(entries)

    async def oldest(self) -> str | None:
        """The position of the stream's oldest entry (None when it is empty): where a reader
        that lost its position to the cap goes on."""
        entries: Any = await self.redis.xrange(self.name, count=1)
        return str(entries[0][0]) if entries else None

    async def confirm_replicated(self, position: str, wait: Wait) -> None:
        """Every entry up to `position`, read before this call, is on `wait.replicas` replicas
        of the shard's node, so a failover keeps it (raises NotReplicated when they do not
        acknowledge in time). The status relay asks before it publishes what it read."""
        marker = self.keys.relay_replicated(self.shard)
        await confirm_on_node(self.redis, marker, position, wait, holds=(self.name, position))

    async def clock_ms(self) -> int:
        """Redis's clock, in ms since the epoch: the clock the stream's positions are written by."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
