"""Fixtures of the processor's relay and rebuild tests (relaying.py): their settings, and a read
model in three shards."""

import itertools
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore

from .relaying import SHARDS, OrdersInShards


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    """This test's topics and prefix; entries are published at once (no durability lag)."""
    return Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_status_topic=test_env["KAFKA_STATUS_TOPIC"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        processor_commit_lag_ms=0,
    )


@pytest.fixture
def sharded_settings(settings: Settings) -> Settings:
    """`settings` in SHARDS shards."""
    return settings.model_copy(update={"redis_shards": SHARDS})


@pytest.fixture
def sharded_store(redis_client: "Redis", test_env: dict[str, str]) -> OrderStore:
    """The read model under this test's own key prefix, in SHARDS shards."""
    return OrderStore(redis_client, Keys(test_env["REDIS_KEY_PREFIX"], SHARDS))


@pytest.fixture
def orders_in_shards(new_order: Callable[..., Order]) -> OrdersInShards:
    """`orders_in_shards(n)`: new orders, `n` in each shard, shard by shard (users 1 to 3)."""

    def make(per_shard: int) -> list[Order]:
        found: dict[int, list[Order]] = {shard: [] for shard in range(SHARDS)}
        for n in itertools.count():
            if all(len(orders) == per_shard for orders in found.values()):
                break
            order = new_order(user_id=n % 3 + 1)
            mine = found[Keys(shards=SHARDS).shard_of(order.order_id)]
            if len(mine) < per_shard:
                mine.append(order)
        return [order for shard in range(SHARDS) for order in found[shard]]

    return make
