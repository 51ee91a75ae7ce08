"""The update stream's reads against a real Redis: positions, catching up, waiting, snapshots."""

import asyncio
import logging
from collections.abc import Callable

import pytest

from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import (
    START,
    InvalidPosition,
    Update,
    UpdateStream,
    newest_position,
    position_key,
)

pytestmark = pytest.mark.redis

NewOrder = Callable[..., Order]


@pytest.fixture
def stream(store: OrderStore) -> UpdateStream:
    """The update stream the test's store writes."""
    return UpdateStream(store.redis, store.keys)


async def test_the_stream_carries_each_state_and_the_history_its_position(
    store: OrderStore, stream: UpdateStream, new_order: NewOrder
) -> None:
    order = new_order(
        name="Caf\u00e9 \\u2615 / \\u00bd", price="0.10"
    )  # cjson escapes, text back as it went in
    assert await stream.updates_after(START) == []
    assert await stream.updates_after("5-0") is None, "a position the stream never had"
    assert await stream.head() == START
    await store.create(order)
    await store.transition(order.order_id, S.PROCESSING)
    await store.transition(order.order_id, S.COMPLETED)
    updates = await stream.updates_after(START)
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
    assert [u.at for u in updates] == [done.created_at, done.processed_at, done.completed_at]
    bare = Update(START, "o", 7, S.PLACED, 1, None)  # an entry from before the stream carried orders
    assert bare.data == {"orderId": "o", "userId": 7, "status": "PLACED", "version": 1}
    for unreadable in ("not json", "[1]", '{"userId": "seven"}'):  # never from our functions
        assert Update(START, "o", 7, S.PLACED, 1, unreadable).data == bare.data
    history = await store.history(order.order_id)
    assert [h.position for h in history] == [u.position for u in updates]

    later = await stream.updates_after(updates[0].position, until=updates[1].position)
    assert later == updates[1:2]
    assert await stream.updates_after(updates[0].position, count=1) == updates[1:2]
    now = await stream.snapshot(order.order_id)
    assert (now.order, now.position, now.head) == (done, updates[2].position, await stream.head())
    assert now.head == updates[2].position
    unknown = await stream.snapshot(new_order().order_id)
    assert (unknown.order, unknown.position, unknown.head) == (None, None, now.head)


async def test_a_position_trimmed_by_the_cap_is_reported(
    store: OrderStore, stream: UpdateStream, new_order: NewOrder
) -> None:
    small = OrderStore(store.redis, store.keys, stream_maxlen=1000)
    orders = [new_order() for _ in range(700)]
    for order in orders:
        await small.create(order)
        await small.transition(order.order_id, S.PROCESSING)
    first = (await small.history(orders[0].order_id))[0].position
    kept = (await small.history(orders[-1].order_id))[0].position
    assert first is not None
    assert kept is not None
    assert await store.redis.xlen(store.keys.updates(0)) < 1400
    assert await stream.updates_after(first) is None
    assert await stream.updates_after(kept) is not None


async def test_waiting_sees_what_comes_after_the_head(
    store: OrderStore, stream: UpdateStream, new_order: NewOrder
) -> None:
    before = new_order()
    await store.create(before)
    head = await stream.head()
    assert await stream.wait_updates(head, block_ms=50) == [], "nothing new: waited, then empty"
    order = new_order()
    waiting = asyncio.create_task(stream.wait_updates(head, block_ms=5000))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await store.create(order)
    (update,) = await asyncio.wait_for(waiting, 5)
    assert (update.order_id, update.status, update.version) == (order.order_id, S.PLACED, 1)
    assert update.position == await stream.head()
    await store.transition(order.order_id, S.PROCESSING)
    await store.transition(order.order_id, S.COMPLETED)
    assert [u.status for u in await stream.wait_updates(head, count=2)] == [S.PLACED, S.PROCESSING]
    assert [u.status for u in await stream.wait_updates(START)] == [
        S.PLACED,
        S.PLACED,
        S.PROCESSING,
        S.COMPLETED,
    ]


async def test_an_entry_that_is_not_a_transition_is_skipped(
    store: OrderStore, stream: UpdateStream, new_order: NewOrder, caplog: pytest.LogCaptureFixture
) -> None:
    order = new_order()
    await store.redis.xadd(store.keys.updates(0), {"note": "not a transition"})
    await store.create(order)
    with caplog.at_level(logging.WARNING, "orders_readmodel.stream"):
        after = await stream.updates_after(START)
        waited = await stream.wait_updates(START)
    assert after is not None
    assert [u.order_id for u in after] == [u.order_id for u in waited] == [order.order_id]
    assert sum("is not a transition" in r.getMessage() for r in caplog.records) == 2


def test_positions_compare_as_stream_ids() -> None:
    assert position_key("1700000000000-2") < position_key("1700000000000-10") < position_key("1700000000001")
    assert position_key(START) == (0, 0)
    for bad in ("", "x-1", "1-x", "-1", "1-2-3", "9" * 30 + "-0", "1-" + "9" * 30, "\u0663-0"):
        with pytest.raises(InvalidPosition):
            position_key(bad)


def test_the_newest_position_of_an_xrevrange_reply() -> None:
    assert newest_position([]) == START
    assert newest_position([("1700000000000-3", {"orderId": "o"})]) == "1700000000000-3"
