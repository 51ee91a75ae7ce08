"""The read model in three shards on one Redis: the code path a Redis Cluster takes.

Every key a call names carries its shard's hash tag, so a call that mixed shards would fail
the slot check below as a cluster would refuse it (CROSSSLOT); pages, counts and stats
read every shard and merge.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from orders_contract.keys import Keys
from orders_contract.models import Order, OrderCreate, new_order_id
from orders_contract.models import OrderStatus as S
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import START, join_positions, split_positions

pytestmark = pytest.mark.redis

SHARDS = 3


@pytest.fixture
def sharded(redis_client: Redis, test_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> OrderStore:
    store = OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"], SHARDS))
    real = store._calls._pipeline

    async def one_slot_per_call(batch: list[Any]) -> list[Any]:
        for words, _ in batch:
            if words[0] in ("FCALL", "FCALL_RO"):
                names = words[3 : 3 + int(words[2])]
                assert len({key_slot(n.encode()) for n in names}) == 1, words
        return await real(batch)

    monkeypatch.setattr(store._calls, "_pipeline", one_slot_per_call)
    return store


def _order(shard: int | None = None, user_id: int = 5) -> Order:
    request = OrderCreate.model_validate(
        {"userId": user_id, "productName": "Widget", "quantity": 2, "price": 3}
    )
    return Order.place(request, new_order_id(shard, SHARDS) if shard is not None else None)


async def test_each_order_lives_in_its_shard(sharded: OrderStore) -> None:
    orders = [_order(n % SHARDS) for n in range(6)]
    for order in orders:
        assert (await sharded.create(order, event_id="e")).created
        assert (await sharded.start(order)).status is S.PROCESSING
        assert (await sharded.transition(order.order_id, S.COMPLETED)).applied
    k = sharded.keys
    for shard in range(SHARDS):
        mine = {o.order_id for o in orders if k.shard_of(o.order_id) == shard}
        assert set(await sharded.redis.zrange(k.all_orders(shard), 0, -1)) == mine
        assert await sharded.redis.xlen(k.updates(shard)) == 3 * len(mine)
        histories = [await sharded.history(i) for i in mine]
        positions = {e.position for h in histories for e in h}
        entries: Any = await sharded.redis.xrange(k.updates(shard))
        stream = {p for p, _ in entries}
        assert positions == stream  # each history entry points into its own shard's stream
    assert await sharded.count(partial(k.by_status, S.COMPLETED)) == 6
    assert await sharded.ids(k.all_orders) == sorted((o.order_id for o in orders), reverse=True)


async def test_pages_merge_the_shards_newest_first(sharded: OrderStore) -> None:
    orders = [_order(user_id=40 + n % 2) for n in range(20)]
    assert len({sharded.keys.shard_of(o.order_id) for o in orders}) == SHARDS
    for order in orders:
        await sharded.create(order)
    for order in orders[:7]:
        await sharded.transition(order.order_id, S.PROCESSING)
    newest = sorted(orders, key=lambda o: o.order_id, reverse=True)
    k = sharded.keys
    indexes: dict[Callable[[int], str], list[Order]] = {
        k.all_orders: newest,
        partial(k.by_user, 41): [o for o in newest if o.user_id == 41],
        partial(k.by_status, S.PROCESSING): [o for o in newest if o in orders[:7]],
    }
    for index, wanted in indexes.items():
        for limit in (1, 3, 7, 50):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                page, cursor = await sharded.page(index, limit, cursor)
                assert len(page) <= limit
                seen += [o["orderId"] for o in page]
                if cursor is None:
                    break
            assert seen == [o.order_id for o in wanted], (index, limit)


async def test_stats_sum_the_shards_and_give_every_head(sharded: OrderStore) -> None:
    empty = await sharded.stats(0, 1)
    assert empty.head == join_positions([START] * SHARDS)
    orders = [_order(n % SHARDS) for n in range(9)]
    for order in orders:
        await sharded.create(order)
    await sharded.transition(orders[0].order_id, S.CANCELLED)
    ms = int(orders[0].order_id.replace("-", "")[:12], 16)
    stats = await sharded.stats(ms // 1000 * 1000 - 60_000, 120)
    assert stats.counts[S.PLACED] == 8
    assert stats.counts[S.CANCELLED] == 1
    assert sum(stats.per_second) == 9
    heads = split_positions(stats.head, SHARDS)
    assert heads == [await sharded.stream(s).head() for s in range(SHARDS)]


async def test_a_batch_shares_a_shard_and_is_abandoned_in_one_step(sharded: OrderStore) -> None:
    batch = [_order(1) for _ in range(5)]
    events = [(o.order_id, f"e{n}") for n, o in enumerate(batch)]
    assert await sharded.abandon(events, ttl_s=60) is False
    assert not any(
        [(await sharded.create(o, event_id=e)).applied for o, (_, e) in zip(batch, events, strict=True)]
    )
    assert await sharded.count(sharded.keys.all_orders) == 0


async def test_the_layout_is_fixed_once_written(sharded: OrderStore, redis_client: Redis) -> None:
    await sharded.check_layout()
    await sharded.check_layout()
    assert not await sharded.holds_orders()
    await sharded.create(_order(2))
    assert await sharded.holds_orders()
    other = OrderStore(redis_client, Keys(sharded.keys.prefix, 2))
    with pytest.raises(ValueError, match="REDIS_SHARDS=3, not 2"):
        await other.check_layout()


async def test_one_shards_data_from_before_the_count_was_recorded_is_refused(
    redis_client: Redis, test_env: dict[str, str]
) -> None:
    old = OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"]))
    await old.create(_order())
    await redis_client.delete(old.keys.layout)  # as written before the count was recorded
    with pytest.raises(ValueError, match="REDIS_SHARDS=1, not 3"):
        await OrderStore(redis_client, Keys(old.keys.prefix, SHARDS)).check_layout()
    await old.check_layout()  # the one shard it was written with still starts
