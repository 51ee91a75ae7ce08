"""Live streams over a real Redis and a real HTTP server (SSE needs one that streams, not ASGI in memory)."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_query.hub import Hub, LiveMetrics
from orders_query.live import LiveStream
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_stack.sse import SseEvent, read_events
from orders_web.metrics import ServiceMetrics

pytestmark = pytest.mark.redis

NewOrder = Callable[..., Order]


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        sse_heartbeat_ms=200,
        api_public_url="http://api.example:8000",
    )


@pytest.fixture
async def query(settings: Settings, serve: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The query app served by uvicorn on a free loopback port, in this event loop."""
    async with serve(settings) as client:
        yield client


async def collect(
    client: httpx.AsyncClient, path: str, until: Callable[[list[SseEvent]], bool], **kwargs: Any
) -> list[SseEvent]:
    """Events of one stream (id-only ones and comments included) until `until` holds or it ends."""
    seen: list[SseEvent] = []
    async with asyncio.timeout(20), client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response, comments=True):
            seen.append(event)
            if until(seen):
                break
    return seen


def transitions(events: list[SseEvent]) -> list[SseEvent]:
    return [e for e in events if e.event in S.__members__]


def statuses(events: list[SseEvent]) -> list[str]:
    return [e.event for e in transitions(events)]


async def take(frames: AsyncGenerator[bytes], n: int) -> list[bytes]:
    """The next `n` transition frames of a `LiveStream` (heartbeats passed over)."""
    got: list[bytes] = []
    async with asyncio.timeout(20):
        while len(got) < n:
            frame = await anext(frames)
            if frame.startswith(b"id: "):
                got.append(frame)
    return got


async def progress(store: OrderStore, order: Order, *targets: S) -> None:
    for target in targets:
        await asyncio.sleep(0.05)
        assert (await store.transition(order.order_id, target)).applied


async def test_an_order_stream_starts_with_the_current_state_and_ends_when_final(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()
    await store.create(order)
    mover = asyncio.create_task(progress(store, order, S.PROCESSING, S.COMPLETED))
    events = await collect(query, f"/api/orders/{order.order_id}/events", lambda seen: False)
    await mover
    assert statuses(events) == ["PLACED", "PROCESSING", "COMPLETED"]
    seen = transitions(events)
    assert [e.json()["version"] for e in seen] == [1, 2, 3]
    assert seen[-1].json()["completedAt"] is not None
    # Ids are the stream positions the history records.
    history = (await query.get(f"/api/orders/{order.order_id}/history")).json()["data"]
    assert [h["position"] for h in history] == [e.id for e in seen]
    assert [h["status"] for h in history] == ["PLACED", "PROCESSING", "COMPLETED"]


async def test_resume_gives_exactly_the_rest_and_204_once_final(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()
    await store.create(order)
    await progress(store, order, S.PROCESSING, S.COMPLETED)
    history = await store.history(order.order_id)
    placed_at = history[0].position
    assert placed_at is not None
    events = await collect(
        query, f"/api/orders/{order.order_id}/events", lambda s: False, headers={"Last-Event-ID": placed_at}
    )
    assert statuses(events) == ["PROCESSING", "COMPLETED"]
    # The query parameter does the same for clients that cannot set headers.
    again = await collect(
        query, f"/api/orders/{order.order_id}/events", lambda s: False, params={"lastEventId": placed_at}
    )
    assert statuses(again) == ["PROCESSING", "COMPLETED"]
    done = await query.get(
        f"/api/orders/{order.order_id}/events", headers={"Last-Event-ID": history[-1].position or ""}
    )
    assert done.status_code == 204


async def test_a_resumed_order_stream_carries_that_order_only(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    order, other = new_order(), new_order()
    await store.create(order)
    await store.create(other)
    placed_at = (await store.history(order.order_id))[0].position
    assert placed_at is not None
    # Another order's transitions land in the stream between this one's.
    await progress(store, other, S.PROCESSING)
    await progress(store, order, S.PROCESSING)
    await progress(store, other, S.COMPLETED)
    await progress(store, order, S.COMPLETED)
    events = await collect(
        query, f"/api/orders/{order.order_id}/events", lambda s: False, headers={"Last-Event-ID": placed_at}
    )
    assert statuses(events) == ["PROCESSING", "COMPLETED"]
    assert {e.json()["orderId"] for e in transitions(events)} == {order.order_id}


@pytest.mark.parametrize("position", ["\u00b2", "\u0663-0", "9" * 30 + "-0", "1-" + "9" * 30])
async def test_a_position_that_is_not_one_is_400(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder, position: str
) -> None:
    order = new_order()
    await store.create(order)
    for path in (f"/api/orders/{order.order_id}/events", "/api/orders/events"):
        response = await query.get(path, params={"lastEventId": position})
        assert response.status_code == 400, (path, position, response.text)


async def test_an_unknown_order_is_waited_for(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await store.create(order)
        await progress(store, order, S.PROCESSING, S.FAILED)

    task = asyncio.create_task(later())
    events = await collect(query, f"/api/orders/{order.order_id}/events", lambda s: False)
    await task
    assert events[0].event == ""  # an id-only block: the position the stream starts from
    assert statuses(events) == ["PLACED", "PROCESSING", "FAILED"]
    assert any(e.event == "comment" for e in events), "heartbeats while it waited"


async def test_the_feed_filters_and_resumes(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    mine, other = new_order(user_id=7), new_order(user_id=8)

    async def place() -> None:
        await asyncio.sleep(0.2)
        for order in (mine, other):
            await store.create(order)
            await progress(store, order, S.PROCESSING, S.COMPLETED)

    task = asyncio.create_task(place())
    by_user, completed = await asyncio.gather(
        collect(query, "/api/orders/events?userId=7", lambda s: len(statuses(s)) == 3),
        collect(query, "/api/orders/events?status=completed", lambda s: len(statuses(s)) == 2),
    )
    await task
    assert statuses(by_user) == ["PLACED", "PROCESSING", "COMPLETED"]
    assert {e.json()["orderId"] for e in transitions(by_user)} == {mine.order_id}
    assert [e.json()["orderId"] for e in transitions(completed)] == [mine.order_id, other.order_id]
    # Resuming the user's feed from its first position replays the same three events.
    start = by_user[0].id
    assert by_user[0].event == ""
    assert start is not None
    replay = await collect(
        query,
        "/api/orders/events?userId=7",
        lambda s: len(statuses(s)) == 3,
        headers={"Last-Event-ID": start},
    )
    assert [e.id for e in transitions(replay)] == [e.id for e in transitions(by_user)]


async def test_a_position_older_than_the_cap_gets_a_reset(
    query: httpx.AsyncClient, redis_client: Any, test_env: dict[str, str], new_order: NewOrder
) -> None:
    small = OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"]), stream_maxlen=1000)
    first = new_order(user_id=3)
    await small.create(first)
    stale = (await small.history(first.order_id))[0].position
    assert stale is not None
    noise = {"orderId": new_order().order_id, "userId": "9", "status": "PLACED", "version": "1"}
    async with redis_client.pipeline(transaction=False) as pipe:
        for _ in range(1300):  # the cap is approximate: trimming drops whole nodes of 100
            pipe.xadd(small.keys.updates(0), noise, maxlen=1000, approximate=True)
        await pipe.execute()
    assert (await UpdateStream(redis_client, small.keys).updates_after(stale)) is None
    feed = await collect(
        query,
        "/api/orders/events",
        lambda s: any(e.event == "reset" for e in s),
        headers={"Last-Event-ID": stale},
    )
    reset = feed[-1]
    assert reset.event == "reset"
    assert reset.json()["lastEventId"] == stale
    assert reset.id is not None
    assert reset.id != stale
    one = await collect(
        query,
        f"/api/orders/{first.order_id}/events",
        lambda s: bool(statuses(s)),
        headers={"Last-Event-ID": stale},
    )
    assert [e.event for e in one if e.event != "comment"] == ["reset", "PLACED"]


async def test_bad_parameters_are_400(query: httpx.AsyncClient) -> None:
    assert (await query.get("/api/orders/events", params={"status": "lost"})).status_code == 400
    assert (await query.get("/api/orders/events", headers={"Last-Event-ID": "yesterday"})).status_code == 400
    assert (await query.get("/api/orders/not-a-uuid/events")).status_code == 400
    missing = await query.get("/api/orders/01939a4e-0000-7000-8000-000000000000/history")
    assert missing.status_code == 404
    assert missing.json()["success"] is False


async def test_cors_dashboard_and_stats(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    preflight = await query.options(
        "/api/orders/events",
        headers={
            "Origin": "http://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers, "CORS is the api's only"

    assert 'href="/dashboard"' in (await query.get("/")).text
    paths = (await query.get("/openapi.json")).json()["paths"]
    assert "text/event-stream" in paths["/api/orders/events"]["get"]["responses"]["200"]["content"]
    assert "/api/orders/{orderId}/history" in paths
    page = (await query.get("/dashboard")).text
    assert '<meta name="orders-api" content="http://api.example:8000">' in page
    for asset in ("dashboard.js", "dashboard.css"):
        response = await query.get(f"/dashboard/assets/{asset}")
        assert response.status_code == 200
        assert "://" not in response.text, "nothing fetched from outside"

    for order in (new_order(), new_order()):
        await store.create(order)
    await store.transition(order.order_id, S.PROCESSING)
    stats = (await query.get("/api/orders/stats", params={"seconds": 60})).json()["data"]
    assert stats["counts"] == {"PLACED": 1, "PROCESSING": 1, "COMPLETED": 0, "CANCELLED": 0, "FAILED": 0}
    assert len(stats["perSecond"]) == 60
    assert sum(stats["perSecond"]) == 2
    assert stats["position"] == await UpdateStream(store.redis, store.keys).head()


async def test_a_slow_client_never_blocks_others_and_misses_nothing(
    settings: Settings, store: OrderStore, new_order: NewOrder
) -> None:
    """A client whose buffer fills up is dropped from the fan-out and catches up from Redis."""
    stream = UpdateStream(store.redis, store.keys)
    metrics = ServiceMetrics("query")
    hub = Hub([stream], buffer=5, block_ms=100, metrics=LiveMetrics(metrics))
    await hub.start()
    try:
        await hub.ready()
        slow = LiveStream(hub, [stream], None, lambda event: True, heartbeat=0.2)
        fast = LiveStream(hub, [stream], None, lambda event: True, heartbeat=0.2)
        slow_frames = slow.frames(b"", slow.start)
        fast_frames = fast.frames(b"", fast.start)
        await anext(slow_frames)
        await anext(fast_frames)
        orders = [new_order() for _ in range(10)]

        async def write() -> None:
            for order in orders:
                await store.create(order)
                await store.transition(order.order_id, S.PROCESSING)

        writer = asyncio.create_task(write())

        fast_got = await take(fast_frames, 20)  # the slow one is not read meanwhile
        await writer
        assert (metrics.registry.get_sample_value("query_live_fell_behind_total") or 0) >= 1
        slow_got = await take(slow_frames, 20)
        assert slow_got == fast_got, "the same events, in the same order, none twice"
        await slow_frames.aclose()
        await fast_frames.aclose()
        slow.close()
        fast.close()
        assert hub.subscribers == 0
    finally:
        await hub.stop()
