"""Helpers of the processor's relay and rebuild tests: relays run in the test, the status topic
read back, and a read model in three shards (REDIS_SHARDS=3), whose keys carry the shards' hash
tags on the one test Redis, as on a Redis Cluster."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiokafka import ConsumerRecord

from orders_contract.events import decode_status_event
from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_kafka.clients import start_reader, stop_bounded
from orders_processor.metrics import current_value
from orders_processor.relay import Relay
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack.ledger import read_records

SHARDS = 3

OrdersInShards = Callable[[int], list[Order]]
"""The `orders_in_shards` fixture: `orders_in_shards(n)`, n new orders in each shard."""

FAST = 0.2
"""The lease stagger of the tests that are not about spreading (one relay takes every lease)."""


@contextlib.asynccontextmanager
async def running(settings: Settings, store: OrderStore, stagger_s: float = FAST) -> AsyncIterator[Relay]:
    """A relay (a processor's) running until the block ends."""
    relay = Relay(settings, store, stagger_s=stagger_s)
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    try:
        yield relay
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not condition():
            await asyncio.sleep(0.05)


def published(relay: Relay) -> float:
    return current_value(relay.metrics.published)


async def committed(settings: Settings, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of the status topic up to its end, once `count` are there (a
    commit's markers reach the partitions a little after it)."""
    topic = settings.kafka_status_topic
    await read_records(settings.kafka_bootstrap_servers, topic, count, committed_only=True)
    consumer, partitions = await start_reader(settings, topic)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        async with asyncio.timeout(60):
            while remaining:
                for tp, batch in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                    records += [record for record in batch if record.offset < end[tp]]
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await stop_bounded(consumer, "test reader stop")
    return records


def events_by_order(records: list[ConsumerRecord[bytes, bytes]], keys: Keys) -> dict[str, list[int]]:
    """Each order's versions in the order its partition holds them; every order's events are in
    one partition, of its shard's."""
    seen: dict[str, list[int]] = {}
    partition: dict[str, int] = {}
    for record in records:
        order = decode_status_event(record.value).data
        assert record.partition % SHARDS == keys.shard_of(order.order_id)
        assert partition.setdefault(order.order_id, record.partition) == record.partition
        seen.setdefault(order.order_id, []).append(order.version)
    return seen
