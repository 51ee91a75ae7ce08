"""Reads over every shard of the read model: pages of an index, counts, ids, stats.

Each shard holds its own indexes and update stream (keys.py); these reads ask every shard
and merge, in as few round trips as the batcher makes of them. `OrderStore` inherits
`ShardedReads`, so callers still find every read on the store.
"""

import asyncio
import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from orders_contract.keys import Keys
from orders_contract.models import OrderStatus, order_json
from orders_readmodel.batching import ScriptBatcher
from orders_readmodel.stream import START, join_positions

__all__ = ["Index", "InvalidCursor", "ShardedReads", "Stats", "decode_cursor", "encode_cursor"]

_STATUSES = tuple(OrderStatus)

Index = Callable[[int], str]
"""An index in every shard: shard -> its key (Keys.all_orders, partial(Keys.by_user, 7), ...)."""


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[OrderStatus, int]
    per_second: list[int]
    """Orders created in each second from `since_ms` on (by the time in their UUIDv7 ids)."""
    head: str
    """The update streams' newest positions (stream.join_positions): what comes after is new."""


def encode_cursor(order_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(order_id).bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return str(uuid.UUID(bytes=raw))
    except (ValueError, binascii.Error):
        raise InvalidCursor("cursor is not one this service handed out") from None


class ShardedReads:
    """The reads over every shard; the store gives them its batcher, keys and status indexes."""

    keys: Keys
    _calls: ScriptBatcher
    _status_keys: list[list[str]]
    """Per shard, the status indexes in OrderStatus order."""

    async def page(
        self, index: Index, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Orders of an index, newest first, in their JSON form: one page and the cursor of
        the next (None if last).

        Two round trips (the batcher sends each step's calls together), and every key a call
        touches is named as a key, in one shard, as a Redis Cluster needs: each shard's next
        `limit + 1` ids below the cursor (one more, to know whether a next page exists),
        merged newest first (ids are time-ordered, so the cursor is the last id and stays
        stable while orders arrive); then the page's hashes as JSON texts from one read-only
        function (orders_hashes_json) per shard.
        """
        start = f"({decode_cursor(cursor)}" if cursor else "+"
        shards = range(self.keys.shards)
        found = await asyncio.gather(
            *(
                self._calls.command("ZRANGE", index(s), start, "-", "BYLEX", "REV", "LIMIT", 0, limit + 1)
                for s in shards
            )
        )
        ids: list[str] = found[0] if len(found) == 1 else sorted((i for f in found for i in f), reverse=True)
        wanted = ids[:limit]
        by_shard: dict[int, list[str]] = {}
        for order_id in wanted:
            by_shard.setdefault(self.keys.shard_of(order_id), []).append(order_id)
        replies = await asyncio.gather(
            *(
                self._calls.command(
                    "FCALL_RO", "orders_hashes_json", len(group), *map(self.keys.order, group)
                )
                for group in by_shard.values()
            )
        )
        texts = dict(
            zip(
                (i for group in by_shard.values() for i in group),
                (t for r in replies for t in r),
                strict=True,
            )
        )
        rows = (orjson.loads(texts[order_id]) for order_id in wanted)
        orders = [order_json(row) for row in rows if row]  # an id without a hash: {}
        return orders, encode_cursor(ids[limit - 1]) if len(ids) > limit else None

    async def count(self, index: Index) -> int:
        """How many orders an index holds, over every shard."""
        shards = range(self.keys.shards)
        return sum(await asyncio.gather(*(self._calls.command("ZCARD", index(s)) for s in shards)))

    async def ids(self, index: Index) -> list[str]:
        """Every order id of an index, over every shard, newest first (audits and tests)."""
        shards = range(self.keys.shards)
        found = await asyncio.gather(*(self._calls.command("ZRANGE", index(s), 0, -1) for s in shards))
        return sorted((i for ids in found for i in ids), reverse=True)

    MAX_STATS_SECONDS = 300
    """The longest window `stats` counts: it bounds what one call costs Redis."""

    async def stats(self, since_ms: int, seconds: int) -> Stats:
        """Orders per status, orders created in each of `seconds` seconds (at most
        MAX_STATS_SECONDS) from `since_ms` on, and the stream's head.

        One read-only function call (orders_stats) per shard through the batcher: one round
        trip, a ZLEXCOUNT per second on the server; the shards' numbers are summed. Every key
        it reads is passed as a key.
        """
        if not 1 <= seconds <= self.MAX_STATS_SECONDS:
            raise ValueError(f"seconds must be 1 to {self.MAX_STATS_SECONDS}")

        def bound(ms: int) -> str:  # ids with a smaller time sort before it
            prefix = f"{ms:012x}"
            return f"{prefix[:8]}-{prefix[8:]}"

        bounds = [bound(since_ms + i * 1000) for i in range(seconds + 1)]
        k = self.keys
        replies = await asyncio.gather(
            *(
                self._calls.command(
                    "FCALL_RO",
                    "orders_stats",
                    2 + len(_STATUSES),
                    k.updates(shard),
                    k.all_orders(shard),
                    *status_keys,
                    *bounds,
                )
                for shard, status_keys in enumerate(self._status_keys)
            )
        )
        counts = dict.fromkeys(_STATUSES, 0)
        per_second = [0] * seconds
        heads = []
        for newest, numbers, seconds_counts in replies:
            for status, n in zip(_STATUSES, numbers, strict=True):
                counts[status] += int(n)
            per_second = [a + int(b) for a, b in zip(per_second, seconds_counts, strict=True)]
            heads.append(str(newest) if newest else START)
        return Stats(counts, per_second, join_positions(heads))
