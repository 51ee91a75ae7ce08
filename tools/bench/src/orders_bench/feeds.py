"""Where a load process sees an order's status change: the Redis update stream or the SSE feed.

Both deliver `(orderId, status)` pairs to a callback as soon as the client can
see them. `redis` reads the read model's update stream with the reader the
query service uses (`orders_readmodel.stream.UpdateStream`); `sse` reads the query
service's live feed (`GET /api/orders/events`) with the stack's SSE parser
(`orders_stack.sse`). The bench picks one with `--feed`.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol, cast

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from orders_contract.keys import Keys
from orders_readmodel.stream import UpdateStream
from orders_stack.sse import parse_events

__all__ = [
    "FEEDS",
    "Emit",
    "Feed",
    "FeedKind",
    "FeedUnavailable",
    "RedisStreamFeed",
    "SseFeed",
    "make_feed",
]

Emit = Callable[[str, str], None]
"""Called with (orderId, status) for every update, in the order the feed delivers them."""

FeedKind = Literal["redis", "sse"]
FEEDS: tuple[FeedKind, ...] = ("redis", "sse")


class FeedUnavailable(RuntimeError):
    """The feed cannot be read (an endpoint that does not exist yet, say)."""


class Feed(Protocol):
    async def run(self, emit: Emit, ready: asyncio.Event) -> None:
        """Deliver updates until cancelled; set `ready` once updates from now on will be seen."""


class RedisStreamFeed:
    """The update streams of the read model under `key_prefix`, from their newest entries on:
    every shard's (`shards`, REDIS_SHARDS), each on a client of its own (XREAD blocks it); a
    Redis Cluster's (`cluster`) through redis-py's cluster client, seeded by `redis_url`."""

    def __init__(
        self, redis_url: str, key_prefix: str, batch: int = 1000, shards: int = 1, cluster: bool = False
    ) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.batch = batch
        self.shards = shards
        self.cluster = cluster

    def _client(self) -> Redis:
        if self.cluster:
            return cast(Redis, RedisCluster.from_url(self.redis_url, decode_responses=True))
        return Redis.from_url(self.redis_url, decode_responses=True)

    async def run(self, emit: Emit, ready: asyncio.Event) -> None:
        keys = Keys(self.key_prefix, self.shards)
        clients = [self._client() for _ in range(self.shards)]
        try:
            streams = [UpdateStream(client, keys, shard) for shard, client in enumerate(clients)]
            heads = [await stream.head() for stream in streams]
            ready.set()
            await asyncio.gather(*(self._follow(s, h, emit) for s, h in zip(streams, heads, strict=True)))
        finally:
            for client in clients:
                await client.aclose()

    async def _follow(self, stream: UpdateStream, last: str, emit: Emit) -> None:
        while True:
            for update in await stream.wait_updates(last, self.batch, 500):
                last = update.position
                emit(update.order_id, update.status)


class SseFeed:
    """The query service's Server-Sent Events feed; each event's `data` is JSON with orderId and status."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def run(self, emit: Emit, ready: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, headers={"Accept": "text/event-stream"}) as resp,
        ):
            if resp.status != 200:
                raise FeedUnavailable(f"GET {self.url} answered {resp.status}")
            ready.set()
            async for event in parse_events(_lines(resp.content)):
                if event.data:
                    _emit_sse(emit, event.data)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    async for raw in content:
        yield raw.decode()


def _emit_sse(emit: Emit, payload: str) -> None:
    """Emits the order of an event whose `data` is JSON with orderId and status (or holds
    such an object as its `data`); other events are not transitions."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if isinstance(event, dict):
        inner: Any = event.get("data")
        order: dict[str, Any] = inner if isinstance(inner, dict) else event
        order_id, status = order.get("orderId"), order.get("status")
        if isinstance(order_id, str) and isinstance(status, str):
            emit(order_id, status)


def make_feed(
    kind: FeedKind,
    *,
    redis_url: str,
    key_prefix: str,
    query_url: str,
    redis_shards: int = 1,
    redis_cluster: bool = False,
) -> Feed:
    if kind == "redis":
        return RedisStreamFeed(redis_url, key_prefix, shards=redis_shards, cluster=redis_cluster)
    return SseFeed(query_url.rstrip("/") + "/api/orders/events?status=COMPLETED")
