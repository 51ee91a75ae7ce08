"""Live streams over a read model in 3 shards (REDIS_SHARDS=3), on the one test Redis: the shards'
keys carry hash tags, so this is the code path of a Redis Cluster. A feed follows every shard's
stream, its ids a position in each; an order's stream follows its shard's, its ids plain."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_query.hub import Hub, LiveMetrics
from orders_query.live import LiveStream
from orders_query.settings import Settings
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import join_positions, position_key, split_positions
from orders_stack.sse import SseEvent, read_events
from orders_web.metrics import ServiceMetrics

from .test_live import NewOrder, collect, progress, statuses, take, transitions

pytestmark = pytest.mark.redis

SHARDS = 3


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        redis_shards=SHARDS,
        sse_heartbeat_ms=200,
    )


@pytest.fixture
def sharded(redis_client: Redis, test_env: dict[str, str]) -> OrderStore:
    """The read model under this test's prefix, in 3 shards."""
    return OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"], SHARDS))


@pytest.fixture
async def query(settings: Settings, serve: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as client:
        yield client


def in_shard(new_order: NewOrder, keys: Keys, shard: int, user_id: int = 1) -> Order:
    """A new order whose id puts it in `shard`."""
    while keys.shard_of((order := new_order(user_id=user_id)).order_id) != shard:
        pass
    return order


async def check_ids(store: OrderStore, events: list[SseEvent]) -> None:
    """A feed's event ids: a position in each shard, the event's own shard's that of its transition."""
    for event in transitions(events):
        data = event.json()
        assert event.id is not None
        history = await store.history(data["orderId"])
        own = split_positions(event.id, SHARDS)[store.keys.shard_of(data["orderId"])]
        assert own == history[data["version"] - 1].position


async def test_a_feed_carries_every_shard_s_transitions(
    query: httpx.AsyncClient, sharded: OrderStore, new_order: NewOrder
) -> None:
    orders = [in_shard(new_order, sharded.keys, shard) for shard in (2, 0, 1)]

    async def place() -> None:
        await asyncio.sleep(0.2)
        for order in orders:
            await sharded.create(order)
            await progress(sharded, order, S.PROCESSING, S.COMPLETED)

    task = asyncio.create_task(place())
    events = await collect(query, "/api/orders/events", lambda s: len(statuses(s)) == 9)
    await task
    assert events[0].event == ""  # where it starts: nothing yet in any shard
    assert events[0].id == join_positions(["0-0"] * SHARDS)
    for order in orders:  # the shards' streams are read side by side: in order within each
        own = [e.event for e in transitions(events) if e.json()["orderId"] == order.order_id]
        assert own == ["PLACED", "PROCESSING", "COMPLETED"]
    await check_ids(sharded, events)
    # The statistics' position is one the feed resumes from: it gives what came after.
    position = (await query.get("/api/orders/stats")).json()["data"]["position"]
    later = in_shard(new_order, sharded.keys, 1)
    creating = asyncio.create_task(sharded.create(later))
    resumed = await collect(
        query, "/api/orders/events", lambda s: bool(statuses(s)), headers={"Last-Event-ID": position}
    )
    await creating
    assert [e.json()["orderId"] for e in transitions(resumed)] == [later.order_id]


@pytest.mark.parametrize(
    ("path", "wanted"), [("/api/orders/events", 3), ("/api/orders/events?status=COMPLETED", 1)]
)
async def test_a_feed_resumed_again_and_again_repeats_and_skips_nothing(
    query: httpx.AsyncClient, sharded: OrderStore, new_order: NewOrder, path: str, wanted: int
) -> None:
    orders = [in_shard(new_order, sharded.keys, n % SHARDS) for n in range(24)]
    first = await collect(query, path, lambda s: bool(s))
    assert first[0].event == ""
    assert first[0].id is not None

    async def write() -> None:
        for order in orders:  # each shard's transitions between the others'
            await sharded.create(order)
            await asyncio.sleep(0.005)
        for order in orders:
            await sharded.transition(order.order_id, S.PROCESSING)
            await sharded.transition(order.order_id, S.COMPLETED)

    writer = asyncio.create_task(write())
    got: list[SseEvent] = []
    last, total = first[0].id, len(orders) * wanted
    while len(got) < total:  # disconnects after 10 transitions, resumes from the last id
        take = min(10, total - len(got))

        def enough(seen: list[SseEvent], take: int = take) -> bool:
            return len(transitions(seen)) == take

        events = await collect(query, path, enough, headers={"Last-Event-ID": last})
        assert events[-1].id is not None
        last = events[-1].id
        got += transitions(events)
    await writer
    seen = [(e.json()["orderId"], e.json()["version"]) for e in got]
    assert len(seen) == len(set(seen)), "nothing twice"
    versions = (1, 2, 3) if wanted == 3 else (3,)
    assert set(seen) == {(o.order_id, v) for o in orders for v in versions}, "nothing missing"
    for order in orders:  # each order's transitions in order
        assert [v for oid, v in seen if oid == order.order_id] == list(versions)
    await check_ids(sharded, got)


async def test_an_order_stream_follows_its_shard(
    query: httpx.AsyncClient, sharded: OrderStore, new_order: NewOrder
) -> None:
    for shard in range(SHARDS):
        order, other = in_shard(new_order, sharded.keys, shard), in_shard(new_order, sharded.keys, shard)
        await sharded.create(order)
        await sharded.create(other)
        path = f"/api/orders/{order.order_id}/events"
        moving = asyncio.create_task(progress(sharded, order, S.PROCESSING, S.COMPLETED))
        events = await collect(query, path, lambda s: False)
        await moving
        history = await sharded.history(order.order_id)
        assert statuses(events) == ["PLACED", "PROCESSING", "COMPLETED"]
        assert [e.id for e in transitions(events)] == [h.position for h in history]  # its shard's
        # Resumed from its first transition: the rest, and none of the shard's other orders'.
        await progress(sharded, other, S.PROCESSING)
        placed_at = history[0].position
        assert placed_at is not None
        resumed = await collect(query, path, lambda s: False, headers={"Last-Event-ID": placed_at})
        assert [e.id for e in transitions(resumed)] == [h.position for h in history[1:]]
        final = await query.get(path, headers={"Last-Event-ID": history[-1].position or ""})
        assert final.status_code == 204
        # A feed's position (every shard's) is one to resume from too: its shard's part counts.
        feed_position = join_positions(["0-0" if n == shard else "9999999999999-0" for n in range(SHARDS)])
        whole = await collect(query, path, lambda s: False, headers={"Last-Event-ID": feed_position})
        assert [e.id for e in transitions(whole)] == [h.position for h in history]


async def test_ids_of_another_shape_are_400(
    query: httpx.AsyncClient, sharded: OrderStore, new_order: NewOrder
) -> None:
    order = in_shard(new_order, sharded.keys, 1)
    await sharded.create(order)
    for path, position in (
        ("/api/orders/events", "1-0"),  # one shard's
        ("/api/orders/events", "1-0_2-0"),
        ("/api/orders/events", "1-0_2-0_3-0_4-0"),
        ("/api/orders/events", "1-0__3-0"),
        ("/api/orders/events", "1-0_x_3-0"),
        (f"/api/orders/{order.order_id}/events", "1-0_2-0"),
        (f"/api/orders/{order.order_id}/events", "1-0_2-0_x"),
    ):
        response = await query.get(path, headers={"Last-Event-ID": position})
        assert response.status_code == 400, (path, position, response.text)


async def _trim(redis: Redis, stream: str) -> None:
    noise: dict[Any, Any] = {
        "orderId": "01939a4e-0000-7000-8000-000000000001",
        "userId": "9",
        "status": "PLACED",
        "version": "1",
    }
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(1300):  # the cap is approximate: trimming drops whole nodes of 100
            pipe.xadd(stream, noise, maxlen=1000, approximate=True)
        await pipe.execute()


async def hub_past_now(query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder, shard: int) -> None:
    """Returns once the query's hub has read `shard`'s stream up to now: a feed opened now sees an
    order of that shard created after it opened (the hub reads each shard in order)."""
    marker = in_shard(new_order, store.keys, shard, user_id=4)
    async with asyncio.timeout(20), query.stream("GET", "/api/orders/events?userId=4") as response:
        async for event in read_events(response):
            if event.event == "":  # the starting position: subscribed
                await store.create(marker)
            elif event.json()["orderId"] == marker.order_id:
                return


@pytest.mark.parametrize("how", ["trimmed", "ahead"])
async def test_a_stale_position_in_one_shard_gets_a_reset(
    query: httpx.AsyncClient, redis_client: Redis, sharded: OrderStore, new_order: NewOrder, how: str
) -> None:
    small = OrderStore(redis_client, sharded.keys, stream_maxlen=1000)
    first = in_shard(new_order, small.keys, 1, user_id=3)
    for order in (in_shard(new_order, small.keys, 0), first, in_shard(new_order, small.keys, 2)):
        await small.create(order)
    heads = split_positions((await query.get("/api/orders/stats")).json()["data"]["position"], SHARDS)
    stale = (await small.history(first.order_id))[0].position
    assert stale is not None
    assert stale == heads[1]
    if how == "trimmed":
        await _trim(redis_client, small.keys.updates(1))
        assert await small.stream(1).updates_after(stale) is None
    else:
        stale = "9999999999999-0"
    await hub_past_now(query, small, new_order, 1)
    held = join_positions([heads[0], stale, heads[2]])
    after = in_shard(new_order, small.keys, 2)
    named: list[SseEvent] = []
    async with (
        asyncio.timeout(20),
        query.stream("GET", "/api/orders/events", headers={"Last-Event-ID": held}) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response):
            named.append(event)
            if event.event == "reset":
                await small.create(after)  # after the reset: the feed goes on from there
            elif event.json()["orderId"] == after.order_id:
                break
    assert named[0].event == "reset"
    assert named[0].json()["lastEventId"] == held
    assert named[0].id is not None
    reset_at = split_positions(named[0].id, SHARDS)
    assert reset_at[0] == heads[0]
    assert reset_at[2] == heads[2]
    assert position_key(reset_at[1]) >= position_key(heads[1])
    assert reset_at[1] != stale
    assert [e.json()["orderId"] for e in named[1:]] == [after.order_id]  # the feed goes on after it
    one = await collect(
        query,
        f"/api/orders/{first.order_id}/events",
        lambda s: bool(statuses(s)),
        headers={"Last-Event-ID": stale},
    )
    assert [e.event for e in one if e.event != "comment"] == ["reset", "PLACED"]


def _parse(frame: bytes) -> tuple[str, dict[str, Any]]:
    """A transition frame's id and data."""
    lines = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
    return lines["id"], orjson.loads(lines["data"])


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics("query")


@pytest.fixture
async def hub(sharded: OrderStore, metrics: ServiceMetrics) -> AsyncIterator[Hub]:
    """A hub of its own over the 3 shards' streams (on the test's client), with small buffers."""
    streams = [sharded.stream(shard) for shard in range(SHARDS)]
    running = Hub(streams, buffer=5, block_ms=100, metrics=LiveMetrics(metrics))
    await running.start()
    try:
        await running.ready()
        yield running
    finally:
        await running.stop()


async def test_a_slow_feed_catches_up_every_shard(
    hub: Hub, metrics: ServiceMetrics, sharded: OrderStore, new_order: NewOrder
) -> None:
    streams = [sharded.stream(shard) for shard in range(SHARDS)]
    slow = LiveStream(hub, streams, None, lambda event: True, heartbeat=0.2)
    fast = LiveStream(hub, streams, None, lambda event: True, heartbeat=0.2)
    slow_frames, fast_frames = slow.frames(b"", slow.start), fast.frames(b"", fast.start)
    await anext(slow_frames)
    await anext(fast_frames)
    orders = [in_shard(new_order, sharded.keys, n % SHARDS) for n in range(12)]

    async def write() -> None:
        for order in orders:
            await sharded.create(order)
            await sharded.transition(order.order_id, S.PROCESSING)

    writer = asyncio.create_task(write())
    fast_got = [_parse(frame) for frame in await take(fast_frames, 24)]  # the slow one not read meanwhile
    await writer
    assert (metrics.registry.get_sample_value("query_live_fell_behind_total") or 0) >= 1
    slow_got = [_parse(frame) for frame in await take(slow_frames, 24)]
    # The same events, none twice; caught up shard after shard, so ids of its own.
    key = [(data["orderId"], data["version"]) for _, data in fast_got]
    assert sorted(key) == sorted((data["orderId"], data["version"]) for _, data in slow_got)
    assert len(set(key)) == 24
    for events in (fast_got, slow_got):
        for id_, data in events:
            shard = sharded.keys.shard_of(data["orderId"])
            history = await sharded.history(data["orderId"])
            assert split_positions(id_, SHARDS)[shard] == history[data["version"] - 1].position
    assert slow.position == fast.position, "both hold every shard's position up to the last"
    await slow_frames.aclose()
    await fast_frames.aclose()
    slow.close()
    fast.close()
    assert hub.subscribers == 0


async def test_a_feed_ahead_of_the_hub_in_one_shard(
    hub: Hub, sharded: OrderStore, new_order: NewOrder
) -> None:
    """A position the stream holds but the hub has not read yet (a client of another instance):
    no reset, nothing twice, and the feed's ids keep that shard's position until the hub passes it."""
    streams = [sharded.stream(shard) for shard in range(SHARDS)]
    stream = LiveStream(hub, streams, None, lambda event: True, heartbeat=0.2)
    start = split_positions(stream.start, SHARDS)
    x, y, z = (in_shard(new_order, sharded.keys, shard) for shard in (0, 1, 0))
    await sharded.create(x)  # after the stream joined the hub: ahead of its start
    held = [(await sharded.history(x.order_id))[0].position or "", *start[1:]]
    frames = stream.frames(b"", join_positions(held), catch_up=True)
    await anext(frames)
    await sharded.create(y)
    (got,) = await take(frames, 1)  # x is held already: not sent
    q = (await sharded.history(y.order_id))[0].position
    assert _parse(got)[0] == join_positions([held[0], q or "", start[2]])
    assert _parse(got)[1]["orderId"] == y.order_id
    await sharded.create(z)
    (then,) = await take(frames, 1)
    position = (await sharded.history(z.order_id))[0].position
    assert _parse(then)[0] == join_positions([position or "", q or "", start[2]])
    assert not stream.ahead, "in step with the hub again: its frames shared"
    await frames.aclose()
    stream.close()
