"""`make rebuild` on a real Kafka and Redis: the read model again from the status topic alone."""

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from orders_contract.events import decode_status_event
from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.commands.rebuild import NotFresh, Rebuilt, rebuild
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack.ledger import compare_read_models

from .relaying import SHARDS, OrdersInShards, committed, events_by_order, published, running, until

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def readable(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    """Stream entries with the order's JSON text parsed (its key order is Redis's)."""
    return [(at, {**fields, "order": orjson.loads(fields["order"])}) for at, fields in entries]


async def relayed_and_rebuilt(
    settings: Settings, store: OrderStore, orders: list[Order], into: Settings
) -> tuple[int, OrderStore, Rebuilt]:
    """`orders` created and moved on (cancelled, completed or processing), their events published
    by the relay, then rebuilt (with `into`'s shards) under another prefix: the events made,
    the rebuilt store, and what the rebuild did."""
    await ensure_topics(settings)
    for n, order in enumerate(orders):
        await store.create(order)
        await store.transition(order.order_id, S.CANCELLED if n % 4 == 0 else S.PROCESSING)
        if n % 4 == 1:
            await store.transition(order.order_id, S.COMPLETED)
    events = sum(3 if n % 4 == 1 else 2 for n in range(len(orders)))
    async with running(settings, store) as relay:
        await until(lambda: published(relay) >= events)
    await committed(settings, events)
    rebuilt = OrderStore(store.redis, Keys(store.keys.prefix + "rebuilt:", into.redis_shards))
    return events, rebuilt, await rebuild(into, rebuilt)


async def test_the_rebuilt_read_model_equals_the_original(
    settings: Settings, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    orders = [new_order(user_id=n % 3 + 1) for n in range(12)]
    events, rebuilt, done = await relayed_and_rebuilt(settings, store, orders, settings)
    assert events == 27
    assert (done.orders, done.events, done.repeats, done.gaps) == (12, 27, 0, 0)
    assert await compare_read_models(store, rebuilt) == []
    newest = readable(await store.redis.xrevrange(store.keys.updates(0), count=1))
    assert readable(await store.redis.xrange(rebuilt.keys.updates(0))) == newest, "the relay goes on there"
    with pytest.raises(NotFresh):
        await rebuild(settings, rebuilt)


async def test_a_rebuild_in_shards_puts_each_event_in_its_orders_shard_and_each_relay_goes_on(
    sharded_settings: Settings, sharded_store: OrderStore, orders_in_shards: OrdersInShards
) -> None:
    settings, store = sharded_settings, sharded_store
    orders = orders_in_shards(4)
    events, rebuilt, done = await relayed_and_rebuilt(settings, store, orders, settings)
    assert (done.orders, done.events, done.repeats, done.gaps, done.misplaced) == (12, events, 0, 0, 0)
    assert await compare_read_models(store, rebuilt) == []
    assert await store.redis.get(rebuilt.keys.layout) == str(SHARDS)
    for shard in range(SHARDS):
        newest = readable(await store.redis.xrevrange(store.keys.updates(shard), count=1))
        assert readable(await store.redis.xrange(rebuilt.keys.updates(shard))) == newest

    # Each shard's relay, now on the rebuilt read model, goes on after what it published.
    processing = [o for n, o in enumerate(orders) if n % 4 in (2, 3)][::2]  # one in each shard
    assert {rebuilt.keys.shard_of(o.order_id) for o in processing} == set(range(SHARDS))
    for order in processing:
        await rebuilt.transition(order.order_id, S.COMPLETED)
    async with running(settings, rebuilt) as relay:
        await until(lambda: published(relay) >= SHARDS)
    seen = events_by_order(await committed(settings, events + SHARDS), rebuilt.keys)
    assert seen == {
        o.order_id: [1, 2, 3] if n % 4 == 1 or o in processing else [1, 2] for n, o in enumerate(orders)
    }


async def test_a_topic_written_in_one_shard_rebuilds_into_three_and_their_relays_go_on(
    settings: Settings, store: OrderStore, sharded_settings: Settings, orders_in_shards: OrdersInShards
) -> None:
    """REDIS_SHARDS changed with a rebuild: every order in its new shard, and each shard's relay
    starts after the position its partitions hold, so nothing is published twice."""
    orders = orders_in_shards(4)
    events, rebuilt, done = await relayed_and_rebuilt(settings, store, orders, sharded_settings)
    assert (done.orders, done.events, done.repeats, done.gaps) == (12, events, 0, 0)
    assert done.misplaced > 0
    assert await compare_read_models(store, rebuilt) == []
    for order in orders:
        await rebuilt.transition(order.order_id, S.FAILED)  # those still processing
    failed = [o.order_id for n, o in enumerate(orders) if n % 4 in (2, 3)]
    async with running(sharded_settings, rebuilt) as relay:
        await until(lambda: published(relay) >= len(failed))
    records = await committed(sharded_settings, events + len(failed))
    versions: dict[str, list[int]] = {}
    for record in records:
        order = decode_status_event(record.value).data
        versions.setdefault(order.order_id, []).append(order.version)
    assert {i: sorted(v) for i, v in versions.items()} == {
        o.order_id: [1, 2, 3] if n % 4 == 1 or o.order_id in failed else [1, 2] for n, o in enumerate(orders)
    }
