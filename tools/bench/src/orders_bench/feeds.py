"""Where a load process sees an order's status change: the Redis update stream or the SSE feed.

Both deliver `(orderId, status)` pairs to a callback as soon as the client can
see them. `redis` reads the read model's update stream (`Keys.updates`) with
XREAD, as the query service does; `sse` reads the query service's live feed
(`GET /api/orders/events`), once that endpoint exists. The bench picks one
with `--feed`.
"""

import asyncio
from collections.abc import Callable
from typing import Any, Literal, Protocol, cast

import aiohttp
import orjson
from redis.asyncio import Redis

__all__ = [
    "FEEDS",
    "Emit",
    "Feed",
    "FeedKind",
    "FeedUnavailable",
    "RedisStreamFeed",
    "SseFeed",
    "make_feed",
    "read_stream",
    "stream_tail",
]

Emit = Callable[[str, str], None]
"""Called with (orderId, status) for every update, in the order the feed delivers them."""

FeedKind = Literal["redis", "sse"]
FEEDS: tuple[FeedKind, ...] = ("redis", "sse")


class FeedUnavailable(RuntimeError):
    """The feed cannot be read (an endpoint that does not exist yet, say)."""


Entry = tuple[str, dict[str, str]]


async def stream_tail(redis: "Redis", stream: str) -> str:
    """The id of the stream's newest entry ("0-0" when empty): read after it to see only what comes next."""
    newest = cast(list[Entry], await redis.xrevrange(stream, count=1))
    return newest[0][0] if newest else "0-0"


async def read_stream(redis: "Redis", stream: str, after: str, count: int, block_ms: int) -> list[Entry]:
    """Entries after `after`, waiting up to `block_ms` for the first (a client with decoded responses)."""
    answer = cast(
        list[tuple[str, list[Entry]]] | None, await redis.xread({stream: after}, count=count, block=block_ms)
    )
    return [entry for _name, entries in answer or () for entry in entries]


class Feed(Protocol):
    async def run(self, emit: Emit, ready: asyncio.Event) -> None:
        """Deliver updates until cancelled; set `ready` once updates from now on will be seen."""


class RedisStreamFeed:
    """XREAD on the update stream, from its newest entry on."""

    def __init__(self, redis_url: str, stream: str, batch: int = 1000) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.batch = batch

    async def run(self, emit: Emit, ready: asyncio.Event) -> None:
        redis = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            last = await stream_tail(redis, self.stream)
            ready.set()
            while True:
                for entry_id, fields in await read_stream(redis, self.stream, last, self.batch, 500):
                    last = entry_id
                    order_id, status = fields.get("orderId"), fields.get("status")
                    if order_id and status:
                        emit(order_id, status)
        finally:
            await redis.aclose()


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
            data: list[str] = []
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    _emit_sse(emit, "\n".join(data))
                    data.clear()


def _emit_sse(emit: Emit, payload: str) -> None:
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


def make_feed(kind: FeedKind, *, redis_url: str, stream: str, query_url: str) -> Feed:
    if kind == "redis":
        return RedisStreamFeed(redis_url, stream)
    return SseFeed(query_url.rstrip("/") + "/api/orders/events?status=COMPLETED")
