"""The bench's feeds: the shared SSE parser over aiohttp, and the shared update stream reader."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from orders_bench.feeds import RedisStreamFeed, SseFeed, make_feed
from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_readmodel.store import OrderStore
from orders_stack import Infra, free_port
from orders_stack.sse import SseEvent, parse_events

BODY = (
    b"retry: 2000\n\nid: 1-0\n\n"  # the fresh stream's id-only block
    b": keep-alive\r\n\r\n"
    b'id: 2-0\nevent: COMPLETED\ndata: {"orderId": "a", "status": "COMPLETED", "version": 3}\n\n'
    b'id: 3-0\r\nevent: reset\r\ndata: {"message": "re-read", "lastEventId": "1-0"}\r\n\r\n'
    b'data: {"data": {"orderId": "b",\ndata:  "status": "COMPLETED"}}\n\n'  # an order inside `data`
    b"data: not json\n\n"
)


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_the_parser_splits_blocks_as_the_format_says() -> None:
    got = [
        event
        async for event in parse_events(
            lines("id: 7-0", "", ": hi", "event: PLACED", "data: {}", "data:x", "", "data: y\r\n", "\n"),
            comments=True,
        )
    ]
    assert got == [
        SseEvent("", "", "7-0"),
        SseEvent("comment", "hi", "7-0"),
        SseEvent("PLACED", "{}\nx", "7-0"),
        SseEvent("message", "y", "7-0"),
    ]


@pytest.fixture
async def sse_url() -> AsyncIterator[str]:
    """An HTTP server on loopback that answers one SSE body, then ends it."""

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(BODY), 7):  # in pieces that split lines
            await response.write(BODY[start : start + 7])
        return response

    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/events"
    finally:
        await runner.cleanup()


async def test_the_sse_feed_emits_each_order_it_reads(sse_url: str) -> None:
    seen: list[tuple[str, str]] = []
    ready = asyncio.Event()
    await asyncio.wait_for(SseFeed(sse_url).run(lambda *pair: seen.append(pair), ready), 10)
    assert ready.is_set()
    assert seen == [("a", "COMPLETED"), ("b", "COMPLETED")]


@pytest.mark.redis
async def test_the_redis_feed_emits_each_transition_after_it_is_ready(
    infra: Infra, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    earlier, order = new_order(), new_order()
    await store.create(earlier)
    feed = make_feed("redis", redis_url=infra.redis_url, key_prefix=store.keys.prefix, query_url="")
    assert isinstance(feed, RedisStreamFeed)
    assert Keys(feed.key_prefix).updates(0) == store.keys.updates(0)
    seen: list[tuple[str, str]] = []
    ready = asyncio.Event()
    task = asyncio.create_task(feed.run(lambda *pair: seen.append(pair), ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await store.create(order)
        await store.transition(order.order_id, S.PROCESSING)
        await store.transition(order.order_id, S.COMPLETED)
        async with asyncio.timeout(10):
            while len(seen) < 3:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == [(order.order_id, "PLACED"), (order.order_id, "PROCESSING"), (order.order_id, "COMPLETED")]


@pytest.mark.redis
async def test_the_redis_feed_follows_every_shards_stream(
    infra: Infra, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    sharded = OrderStore(store.redis, Keys(store.keys.prefix + "sharded:", 3))
    orders = [new_order() for _ in range(12)]
    assert len({sharded.keys.shard_of(o.order_id) for o in orders}) > 1
    feed = make_feed(
        "redis", redis_url=infra.redis_url, key_prefix=sharded.keys.prefix, query_url="", redis_shards=3
    )
    seen: set[str] = set()
    ready = asyncio.Event()
    task = asyncio.create_task(
        feed.run(lambda oid, status: seen.add(oid) if status == "COMPLETED" else None, ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        for order in orders:
            await sharded.create(order)
            await sharded.transition(order.order_id, S.PROCESSING)
            await sharded.transition(order.order_id, S.COMPLETED)
        async with asyncio.timeout(10):
            while len(seen) < len(orders):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == {o.order_id for o in orders}
