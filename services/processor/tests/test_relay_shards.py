"""The status relays of a read model in three shards on a real Kafka and Redis: one relay per
shard, each with its own lease, partitions and position; each transition published once, in its
order's version order, across stops, kills and relays running twice; leases spread."""

import asyncio
import contextlib

import pytest

from orders_contract.keys import Keys
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.metrics import current_value
from orders_processor.relay import Relay, TooFewPartitions, last_published
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack.ledger import status_events

from .relaying import FAST, SHARDS, OrdersInShards, committed, events_by_order, published, running, until

EVERY = frozenset(range(SHARDS))

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def test_each_shards_transitions_once_in_order_and_a_new_relay_goes_on_in_every_shard(
    sharded_settings: Settings, sharded_store: OrderStore, orders_in_shards: OrdersInShards
) -> None:
    settings, store, keys = sharded_settings, sharded_store, sharded_store.keys
    await ensure_topics(settings)
    orders = orders_in_shards(4)
    for order in orders:
        await store.create(order)
        await store.transition(order.order_id, S.PROCESSING)
    async with running(settings, store) as first:
        await until(lambda: published(first) >= 24)
        assert first.leading == EVERY
        assert current_value(first.metrics.leader) == SHARDS
        assert all(current_value(first.metrics.shard_leader, shard=str(s)) == 1 for s in range(SHARDS))
        assert all([await store.redis.exists(keys.relay_lease(s)) for s in range(SHARDS)])
    assert published(first) == 24
    assert first.leading == frozenset()
    assert not any([await store.redis.exists(keys.relay_lease(s)) for s in range(SHARDS)])
    completed = orders[0:2] + orders[4:6] + orders[8:10]  # two in each shard
    for order in completed:
        await store.transition(order.order_id, S.COMPLETED)
    async with running(settings, store) as second:
        await until(lambda: published(second) >= 6)
    assert published(second) == 6
    seen = events_by_order(await committed(settings, 30), keys)
    assert seen == {order.order_id: [1, 2, 3] if order in completed else [1, 2] for order in orders}
    for shard in range(SHARDS):
        assert await last_published(settings, shard) == await store.stream(shard).head() != "0-0"


async def test_a_relay_killed_mid_load_is_followed_by_another_with_nothing_lost_or_repeated(
    sharded_settings: Settings, sharded_store: OrderStore, orders_in_shards: OrdersInShards
) -> None:
    settings, store = sharded_settings, sharded_store
    await ensure_topics(settings)
    orders = orders_in_shards(6)
    stopping = asyncio.Event()
    relay = Relay(settings, store, stagger_s=FAST)
    victim = asyncio.create_task(relay.run(stopping))
    try:
        for n, order in enumerate(orders):
            if n == len(orders) // 2:
                await until(lambda: relay.leading == EVERY and published(relay) > 0)
            if n == len(orders) // 2 + 2:
                victim.cancel()  # mid-transaction, perhaps: the next relay's start aborts it
                with contextlib.suppress(asyncio.CancelledError):
                    await victim
            await store.create(order)
            await asyncio.sleep(0.05)
            await store.transition(order.order_id, S.PROCESSING)
            await store.transition(order.order_id, S.COMPLETED)
        async with running(settings, store):
            final = {order.order_id: S.COMPLETED for order in orders}
            seen, unreadable = await status_events(
                settings.kafka_bootstrap_servers, settings.kafka_status_topic, final
            )
    finally:
        stopping.set()
        victim.cancel()
    assert unreadable == []
    expected = [(1, S.PLACED), (2, S.PROCESSING), (3, S.COMPLETED)]
    assert seen == {order.order_id: expected for order in orders}
    assert len(await committed(settings, 3 * len(orders))) == 3 * len(orders)


class _OtherLeases(Keys):
    """The same read model, other leases: as if two processors both believed they led."""

    def relay_lease(self, shard: int) -> str:
        return f"{self.prefix}relay:other-lease:{shard}"


async def test_two_relays_on_every_shard_at_once_are_fenced_per_shard(
    sharded_settings: Settings, sharded_store: OrderStore, orders_in_shards: OrdersInShards
) -> None:
    """Zombies (relays that lost their leases but run on) are fenced by each shard's fixed
    transactional.id: two relays publishing every shard at once still publish each entry once."""
    settings, store = sharded_settings, sharded_store
    await ensure_topics(settings)
    twin = OrderStore(store.redis, _OtherLeases(store.keys.prefix, SHARDS))
    orders = orders_in_shards(5)
    async with running(settings, store), running(settings, twin):
        for order in orders:
            await store.create(order)
            await asyncio.sleep(0.05)
            await store.transition(order.order_id, S.PROCESSING)
        final = {order.order_id: S.PROCESSING for order in orders}
        await status_events(settings.kafka_bootstrap_servers, settings.kafka_status_topic, final)
        await asyncio.sleep(2)  # anything repeated would come by now
    seen = events_by_order(await committed(settings, 2 * len(orders)), store.keys)
    assert seen == {order.order_id: [1, 2] for order in orders}


async def test_three_processors_share_the_shards_and_a_stopped_ones_are_taken_over(
    sharded_settings: Settings, sharded_store: OrderStore
) -> None:
    """Every shard has exactly one leader among the processors; once one stops, the others take
    its shards over. How evenly the leases spread depends on when each relay starts (a
    stagger, not a rule), so it is not asserted: a loaded machine let one take all three."""
    settings, store = sharded_settings, sharded_store
    await ensure_topics(settings)
    async with running(settings, store, stagger_s=2.5) as a, running(settings, store, stagger_s=2.5) as b:
        async with running(settings, store, stagger_s=2.5) as c:
            await until(lambda: a.leading | b.leading | c.leading == EVERY)
            assert sum(len(relay.leading) for relay in (a, b, c)) == len(EVERY)
        assert c.leading == frozenset()
        await until(lambda: a.leading | b.leading == EVERY)
        assert not a.leading & b.leading


async def test_a_status_topic_with_fewer_partitions_than_shards_is_refused(
    sharded_settings: Settings, sharded_store: OrderStore
) -> None:
    settings = sharded_settings.model_copy(update={"kafka_topic_partitions": 2})
    with pytest.raises(TooFewPartitions, match="has 2 partitions"):
        await asyncio.wait_for(Relay(settings, sharded_store).run(asyncio.Event()), 60)
