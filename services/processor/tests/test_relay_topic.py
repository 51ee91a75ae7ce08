"""The status topic as the relays see it: each shard's partitions and transactional.id."""

import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_processor.relay import Relay
from orders_processor.relay_topic import (
    TooFewPartitions,
    check_partitions,
    partition_of,
    shard_partitions,
    transactional_id,
)
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore


def test_one_shard_keeps_the_transactional_id_it_always_had_and_shards_get_one_each() -> None:
    assert transactional_id(Settings(kafka_status_topic="orders.status")) == "orders-relay.orders.status"
    sharded = Settings(kafka_status_topic="orders.status", redis_shards=3)
    assert [transactional_id(sharded, shard) for shard in range(3)] == [
        "orders-relay.orders.status.s0",
        "orders-relay.orders.status.s1",
        "orders-relay.orders.status.s2",
    ]


def test_each_shard_writes_its_own_partitions_and_an_order_always_the_same_one() -> None:
    assert shard_partitions(range(6), 1, 0) == [0, 1, 2, 3, 4, 5]
    assert [shard_partitions(range(6), 3, s) for s in range(3)] == [[0, 3], [1, 4], [2, 5]]
    assert [shard_partitions(range(6), 4, s) for s in range(4)] == [[0, 4], [1, 5], [2], [3]]
    order_id = "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"
    assert partition_of(order_id, [1, 4]) == partition_of(order_id, [1, 4]) in (1, 4)
    chosen = {partition_of(f"0193a3b4-5c6d-7e8f-9a0b-{n:012x}", [2, 5]) for n in range(50)}
    assert chosen == {2, 5}


def test_a_topic_with_fewer_partitions_than_shards_is_refused() -> None:
    check_partitions(Settings(redis_shards=3), [0, 1, 2])
    with pytest.raises(TooFewPartitions, match="REDIS_SHARDS=3"):
        check_partitions(Settings(redis_shards=3), [0, 1])


def test_a_relay_refuses_a_store_in_another_number_of_shards() -> None:
    store = OrderStore(Redis(), Keys("test:relay:", 3))  # never connects
    with pytest.raises(ValueError, match="REDIS_SHARDS=1"):
        Relay(Settings(), store)
    assert Relay(Settings(redis_shards=3), store).leading == frozenset()
