"""The read model against a real Redis: atomic, idempotent transitions and paginated indexes."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from orders_common.models import Order
from orders_common.models import OrderStatus as S
from orders_common.store import START, InvalidCursor, InvalidPosition, OrderStore, Update, position_key

pytestmark = pytest.mark.redis

NewOrder = Callable[..., Order]


async def snapshot(store: OrderStore, order: Order) -> tuple[Any, ...]:
    """Everything the store keeps about one order."""
    r: Redis = store.redis
    k = store.keys
    statuses = {s for s in S if await r.zscore(k.by_status(s), order.order_id) is not None}
    return (
        await r.hgetall(k.order(order.order_id)),
        await r.lrange(k.history(order.order_id), 0, -1),
        statuses,
        await r.xlen(k.updates),
    )


async def test_create_is_idempotent(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    first = await store.create(order)
    assert (first.applied, first.status, first.version) == (True, S.PLACED, 1)
    before = await snapshot(store, order)
    again = await store.create(order)
    assert (again.applied, again.status, again.version) == (False, S.PLACED, 1)
    assert await snapshot(store, order) == before
    assert await store.get(order.order_id) == order


async def test_lifecycle_records_times_history_and_stream(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    await store.create(order)
    assert (await store.transition(order.order_id, S.PROCESSING)).version == 2
    assert (await store.transition(order.order_id, S.COMPLETED)).version == 3
    done = await store.get(order.order_id)
    assert done is not None
    assert done.status is S.COMPLETED
    assert done.version == 3
    assert done.created_at <= (done.processed_at or "") <= (done.completed_at or "")
    history = await store.history(order.order_id)
    assert [(h.status, h.version) for h in history] == [(S.PLACED, 1), (S.PROCESSING, 2), (S.COMPLETED, 3)]
    updates: Any = await store.redis.xrange(store.keys.updates)
    assert [u["status"] for _, u in updates] == ["PLACED", "PROCESSING", "COMPLETED"]
    assert (await snapshot(store, order))[2] == {S.COMPLETED}


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], S.COMPLETED),  # PLACED cannot skip PROCESSING
        ([S.PROCESSING], S.CANCELLED),  # too late to cancel
        ([S.PROCESSING], S.PROCESSING),  # already applied
        ([S.PROCESSING, S.COMPLETED], S.FAILED),  # final
        ([S.CANCELLED], S.PROCESSING),  # final
    ],
)
async def test_refused_transitions_change_nothing(
    store: OrderStore, new_order: NewOrder, path: list[S], refused: S
) -> None:
    order = new_order()
    await store.create(order)
    for status in path:
        assert (await store.transition(order.order_id, status)).applied
    before = await snapshot(store, order)
    result = await store.transition(order.order_id, refused)
    assert not result.applied
    assert result.status is (path[-1] if path else S.PLACED)
    assert await snapshot(store, order) == before


async def test_unknown_order(store: OrderStore) -> None:
    result = await store.transition("00000000-0000-7000-8000-000000000000", S.PROCESSING)
    assert (result.applied, result.status) == (False, None)
    assert await store.get("00000000-0000-7000-8000-000000000000") is None


async def test_racing_transitions_apply_once(store: OrderStore, new_order: NewOrder) -> None:
    order = new_order()
    await store.create(order)
    results = await asyncio.gather(
        *(store.transition(order.order_id, s) for s in [S.PROCESSING, S.CANCELLED] * 25)
    )
    assert sum(r.applied for r in results) == 1
    history = await store.history(order.order_id)
    assert len(history) == 2
    assert len((await snapshot(store, order))[2]) == 1  # in exactly one status index


async def test_pages_are_newest_first_and_complete(store: OrderStore, new_order: NewOrder) -> None:
    orders = [new_order(user_id=42) for _ in range(7)]
    for order in orders:
        await store.create(order)
    await store.create(new_order(user_id=43))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.page(store.keys.by_user(42), 3, cursor)
        seen += [o["orderId"] for o in page]
        assert len(page) <= 3
        if cursor is None:
            break
    assert seen == sorted((o.order_id for o in orders), reverse=True)
    all_page, last = await store.page(store.keys.all_orders, 100)
    assert len(all_page) == 8
    assert last is None
    # The JSON form read without pydantic is exactly the model's.
    assert all_page[1:] == [o.model_dump(mode="json") for o in reversed(orders)]
    assert await store.get_json(orders[0].order_id) == orders[0].model_dump(mode="json")


async def test_an_empty_index_and_a_foreign_cursor(store: OrderStore) -> None:
    assert await store.page(store.keys.by_user(999), 10) == ([], None)
    with pytest.raises(InvalidCursor):
        await store.page(store.keys.all_orders, 10, "not-a-cursor!")


async def test_an_abandoned_event_creates_nothing_but_another_does(
    store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()
    assert await store.abandon([(order.order_id, "e1")], ttl_s=60) is False
    assert (await store.create(order, "e1")).abandoned
    assert await store.get(order.order_id) is None
    assert 0 < await store.redis.ttl(store.keys.abandoned(order.order_id)) <= 60
    # A retry of the same order (same Idempotency-Key) is a new event: it creates the order.
    created = await store.create(order, "e2")
    assert (created.applied, created.abandoned) == (True, False)
    assert (await store.create(order, "e1")).status is S.PLACED  # a late e1 is a plain replay
    assert await store.abandon([(order.order_id, "e3")], ttl_s=60) is True  # exists: Kafka held it


async def test_start_creates_if_need_be_and_starts_once(store: OrderStore, new_order: NewOrder) -> None:
    written_through, not_yet = new_order(), new_order()
    await store.create(written_through)
    for order in (written_through, not_yet):
        started = await store.start(order, "e1")
        assert (started.applied, started.status, started.version) == (True, S.PROCESSING, 2)
        history = await store.history(order.order_id)
        assert [(h.status, h.version) for h in history] == [(S.PLACED, 1), (S.PROCESSING, 2)]
        assert (await snapshot(store, order))[2] == {S.PROCESSING}
        before = await snapshot(store, order)
        again = await store.start(order, "e1")  # a replay changes nothing
        assert (again.applied, again.status, again.version) == (False, S.PROCESSING, 2)
        assert await snapshot(store, order) == before
    got = await store.get(not_yet.order_id)
    assert got is not None
    assert got.processed_at is not None
    assert got == not_yet.model_copy(
        update={"status": S.PROCESSING, "version": 2, "processed_at": got.processed_at}
    )


async def test_start_leaves_a_cancelled_or_abandoned_order_alone(
    store: OrderStore, new_order: NewOrder
) -> None:
    cancelled, abandoned = new_order(), new_order()
    await store.create(cancelled)
    await store.transition(cancelled.order_id, S.CANCELLED)
    before = await snapshot(store, cancelled)
    refused = await store.start(cancelled)
    assert (refused.applied, refused.status, refused.version) == (False, S.CANCELLED, 2)
    assert await snapshot(store, cancelled) == before
    await store.abandon([(abandoned.order_id, "e1")], ttl_s=60)
    assert (await store.start(abandoned, "e1")).abandoned
    assert await store.get(abandoned.order_id) is None


async def test_one_claim_per_idempotency_key(store: OrderStore, new_order: NewOrder) -> None:
    orders = [new_order() for _ in range(20)]
    claims = await asyncio.gather(*(store.claim("k-1", o, "fp", ttl_s=60) for o in orders))
    assert sum(c.first for c in claims) == 1
    assert len({c.order.order_id for c in claims}) == 1
    winner = next(c.order for c in claims if c.first)
    assert all(c.order == winner and c.fingerprint == "fp" for c in claims)
    other_user = await store.claim("k-1", new_order(user_id=2), "fp", ttl_s=60)
    assert other_user.first


async def test_abandoning_a_batch_is_all_or_nothing(store: OrderStore, new_order: NewOrder) -> None:
    held, others = new_order(), [new_order() for _ in range(3)]
    await store.create(held, "e0")
    events = [(o.order_id, f"e{n}") for n, o in enumerate([*others, held], start=1)]
    assert await store.abandon(events, ttl_s=60) is True  # one exists: the batch was held
    created = await store.create_all([(o, f"e{n}") for n, o in enumerate(others, start=1)])
    assert all(result.applied for result in created), "nothing was abandoned"

    batch = [new_order() for _ in range(3)]
    assert await store.abandon([(o.order_id, f"b{n}") for n, o in enumerate(batch)], ttl_s=60) is False
    refused = await store.create_all([(o, f"b{n}") for n, o in enumerate(batch)])
    assert all(result.abandoned for result in refused)


async def test_the_stream_carries_each_state_and_the_history_its_position(
    store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order(
        name="Caf\u00e9 \\u2615 / \\u00bd", price="0.10"
    )  # cjson escapes, text back as it went in
    assert await store.updates_after(START) == []
    assert await store.updates_after("5-0") is None, "a position the stream never had"
    await store.create(order)
    await store.transition(order.order_id, S.PROCESSING)
    await store.transition(order.order_id, S.COMPLETED)
    updates = await store.updates_after(START)
    assert updates is not None
    assert [(u.status, u.version, u.order_id) for u in updates] == [
        (S.PLACED, 1, order.order_id),
        (S.PROCESSING, 2, order.order_id),
        (S.COMPLETED, 3, order.order_id),
    ]
    # Each entry holds the order as of its transition, in exactly the model's JSON form.
    assert updates[0].data == order.model_dump(mode="json")
    assert updates[1].data["processedAt"] is not None
    assert updates[1].data["completedAt"] is None
    done = await store.get(order.order_id)
    assert done is not None
    assert updates[2].data == done.model_dump(mode="json")
    bare = Update(START, "o", 7, S.PLACED, 1, None)  # an entry from before the stream carried orders
    assert bare.data == {"orderId": "o", "userId": 7, "status": "PLACED", "version": 1}
    for unreadable in ("not json", "[1]", '{"userId": "seven"}'):  # never from our scripts
        assert Update(START, "o", 7, S.PLACED, 1, unreadable).data == bare.data
    history = await store.history(order.order_id)
    assert [h.position for h in history] == [u.position for u in updates]

    later = await store.updates_after(updates[0].position, until=updates[1].position)
    assert later == updates[1:2]
    now = await store.snapshot(order.order_id)
    assert (now.order, now.position, now.head) == (done, updates[2].position, await store.head())
    unknown = await store.snapshot(new_order().order_id)
    assert (unknown.order, unknown.position) == (None, None)


async def test_a_position_trimmed_by_the_cap_is_reported(store: OrderStore, new_order: NewOrder) -> None:
    small = OrderStore(store.redis, store.keys, stream_maxlen=1000)
    orders = [new_order() for _ in range(700)]
    for order in orders:
        await small.create(order)
        await small.transition(order.order_id, S.PROCESSING)
    first = (await small.history(orders[0].order_id))[0].position
    kept = (await small.history(orders[-1].order_id))[0].position
    assert first is not None
    assert kept is not None
    assert await store.redis.xlen(store.keys.updates) < 1400
    assert await small.updates_after(first) is None
    assert await small.updates_after(kept) is not None


def test_positions_compare_as_stream_ids() -> None:
    assert position_key("1700000000000-2") < position_key("1700000000000-10") < position_key("1700000000001")
    for bad in ("", "x-1", "1-x", "-1", "1-2-3"):
        with pytest.raises(InvalidPosition):
            position_key(bad)
