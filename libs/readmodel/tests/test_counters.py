"""Rate-limit counters against a real Redis: counted per owner and window, and expiring."""

import asyncio

import pytest
from redis.asyncio import Redis

from orders_readmodel.counters import WindowCounters
from orders_readmodel.store import OrderStore

pytestmark = pytest.mark.redis


async def test_counts_add_up_per_owner_and_window_and_expire(store: OrderStore, redis_client: Redis) -> None:
    counters = WindowCounters(store.redis, store.keys)
    counts = await asyncio.gather(*(counters.add("alice", 7, 1, 60) for _ in range(5)))
    assert sorted(counts) == [1, 2, 3, 4, 5]  # concurrent counts, none lost
    assert await counters.add("alice", 7, 10, 60) == 15  # a costly request counts as several
    assert await counters.add("alice", 8, 1, 60) == 1  # the next window starts afresh
    assert await counters.add("bob", 7, 1, 60) == 1  # another owner has a count of its own
    ttl = await redis_client.ttl(store.keys.rate_limit("alice", 7))
    assert 60 < ttl <= 120  # twice the window: the key cleans itself up
    assert not [
        k async for k in redis_client.scan_iter(f"{store.keys.prefix}*alice*") if "ratelimit" not in k
    ]
