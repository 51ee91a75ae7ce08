"""Issue 12, item 5: a `Last-Event-ID` ahead of the update stream (a position it never handed
out) gets `event: reset`, as a trimmed one does, on the feed and on an order's stream, instead
of keep-alives forever. On a real server, with a bounded wait (collect's timeout)."""

import asyncio

import httpx
import pytest

from orders_contract.models import OrderStatus as S
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import position_key

from .test_live import NewOrder, collect, progress, query, settings, statuses

__all__ = ["query", "settings"]  # fixtures, imported for the tests below

pytestmark = pytest.mark.redis

AHEAD = "9999999999999-0"


async def test_the_feed_resets_a_position_ahead_of_the_stream(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    before = new_order()
    await store.create(before)
    head = (await store.history(before.order_id))[-1].position
    assert head is not None
    order = new_order()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await store.create(order)

    mover = asyncio.create_task(later())
    events = await collect(
        query,
        "/api/orders/events",
        lambda seen: any(e.event == "PLACED" and e.json()["orderId"] == order.order_id for e in seen),
        headers={"Last-Event-ID": AHEAD},
    )
    await mover
    named = [e for e in events if e.event != "comment"]
    assert named[0].event == "reset"
    assert named[0].json()["lastEventId"] == AHEAD
    assert named[0].id is not None
    assert position_key(head) <= position_key(named[0].id) < position_key(AHEAD)
    assert named[-1].json()["orderId"] == order.order_id  # the feed goes on after the reset


@pytest.mark.parametrize("how", ["header", "query"])
async def test_an_order_stream_resets_a_position_ahead_of_the_stream(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder, how: str
) -> None:
    order = new_order()
    await store.create(order)
    mover = asyncio.create_task(progress(store, order, S.PROCESSING, S.COMPLETED))
    kwargs = {"headers": {"Last-Event-ID": AHEAD}} if how == "header" else {"params": {"lastEventId": AHEAD}}
    events = await collect(query, f"/api/orders/{order.order_id}/events", lambda s: False, **kwargs)
    await mover
    named = [e.event for e in events if e.event != "comment"]
    assert named[0] == "reset"
    assert statuses(events)[-1] == "COMPLETED"  # then the order, followed to its final state


async def test_a_final_order_resumed_from_ahead_gets_a_reset_not_204(
    query: httpx.AsyncClient, store: OrderStore, new_order: NewOrder
) -> None:
    order = new_order()
    await store.create(order)
    await progress(store, order, S.PROCESSING, S.COMPLETED)
    events = await collect(
        query, f"/api/orders/{order.order_id}/events", lambda s: False, headers={"Last-Event-ID": AHEAD}
    )
    assert [e.event for e in events if e.event != "comment"] == ["reset", "COMPLETED"]
