"""Stream tickets against a real Redis: only their digest is stored, each is taken once."""

import asyncio
import hashlib

import pytest
from redis.asyncio import Redis

from orders_readmodel.store import OrderStore
from orders_readmodel.tickets import TicketStore

pytestmark = pytest.mark.redis


async def test_a_ticket_is_taken_once_and_only_its_digest_is_kept(
    store: OrderStore, redis_client: Redis
) -> None:
    tickets = TicketStore(store.redis, store.keys)
    await tickets.put("s3cr3t", b'{"sub": "alice"}', 30)
    keys = [k async for k in redis_client.scan_iter(f"{store.keys.prefix}*")]
    assert keys == [store.keys.stream_ticket(hashlib.sha256(b"s3cr3t").hexdigest())]
    assert "s3cr3t" not in keys[0]
    assert 0 < await redis_client.ttl(keys[0]) <= 30
    taken = await asyncio.gather(tickets.take("s3cr3t"), tickets.take("s3cr3t"))
    assert sorted(taken, key=str) == [None, '{"sub": "alice"}']  # used once, however raced
    assert await tickets.take("never-issued") is None


async def test_a_ticket_expires(store: OrderStore) -> None:
    tickets = TicketStore(store.redis, store.keys)
    await tickets.put("brief", b"x", 1)
    await asyncio.sleep(1.2)
    assert await tickets.take("brief") is None
