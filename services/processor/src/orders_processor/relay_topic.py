"""The status topic as the relays see it: which partitions each shard's relay writes, which one
an order's events go to, the transactional.id of each shard's relay, and the stream position
read back from a shard's last committed records.

With one shard (REDIS_SHARDS=1) the one relay writes every partition, Kafka's default
partitioner choosing by key, under the transactional.id it always had. With `shards` shards,
shard s's relay writes the partitions p with p % shards == s only: an order lives in one shard,
so its events all go through one relay, in its stream's order, to one partition of its shard's
(chosen by the murmur2 hash of its id, as Kafka's default partitioner hashes keys); and as no
other relay writes those partitions, their last committed records hold how far that relay got.
The topic needs at least `shards` partitions (a multiple of them spreads evenly). Adding
partitions later moves some orders' later events to another partition, as it does for any
keyed topic.
"""

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from orders_contract.events import POSITION_HEADER
from orders_kafka.clients import start_reader, stop_bounded
from orders_readmodel.stream import START, position_key

from .settings import Settings

__all__ = [
    "TooFewPartitions",
    "check_partitions",
    "last_published",
    "partition_of",
    "shard_partitions",
    "topic_partitions",
    "transactional_id",
]


class TooFewPartitions(RuntimeError):
    """The status topic has fewer partitions than the read model has shards."""


def transactional_id(settings: Settings, shard: int = 0) -> str:
    """The fixed transactional.id of shard `shard`'s relay: one per status topic and shard (with
    one shard, the text it always had, so a running relay is fenced by its successor)."""
    base = f"orders-relay.{settings.kafka_status_topic}"
    return base if settings.redis_shards == 1 else f"{base}.s{shard}"


def shard_partitions(partitions: Iterable[int], shards: int, shard: int) -> list[int]:
    """The partitions, of `partitions`, that shard `shard`'s relay writes (every one for one shard)."""
    return sorted(p for p in partitions if p % shards == shard)


def check_partitions(settings: Settings, partitions: Iterable[int]) -> None:
    """TooFewPartitions unless every shard has a partition of its own among `partitions`."""
    found, shards = len(set(partitions)), settings.redis_shards
    if found < shards:
        raise TooFewPartitions(
            f"topic {settings.kafka_status_topic!r} has {found} partitions, fewer than "
            f"REDIS_SHARDS={shards}: each shard's relay needs partitions of its own; give the topic "
            f"at least {shards} (a multiple of {shards}) or use fewer shards"
        )


def partition_of(order_id: str, partitions: list[int]) -> int:
    """The partition, of a shard's `partitions`, that an order's events go to."""
    digest: int = murmur2(order_id.encode())
    return partitions[(digest & 0x7FFFFFFF) % len(partitions)]


async def last_published(settings: Settings, shard: int = 0, timeout: float = 60.0) -> str:
    """The highest stream position in the committed records of shard `shard`'s partitions of the
    status topic (START if none).

    Each partition's last committed record holds that partition's highest position (its relay
    publishes in stream order); the highest of those is where the relay's last committed
    transaction ended.
    """
    consumer, partitions = await start_reader(settings, settings.kafka_status_topic, timeout)
    try:
        mine = set(shard_partitions((tp.partition for tp in partitions), settings.redis_shards, shard))
        async with asyncio.timeout(timeout):
            best = START
            for tp in partitions:
                found = await _last_position(consumer, tp) if tp.partition in mine else None
                if found and position_key(found) > position_key(best):
                    best = found
            return best
    finally:
        await stop_bounded(consumer, "relay position reader stop")


async def topic_partitions(settings: Settings, timeout: float = 30.0) -> list[int]:
    """The partitions of the status topic (none if it does not exist)."""
    consumer, partitions = await start_reader(settings, settings.kafka_status_topic, timeout)
    await stop_bounded(consumer, "partition reader stop")
    return [tp.partition for tp in partitions]


async def _last_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> str | None:
    """The position header of the last committed record of `tp`: read its tail, a wider one
    while the tail holds only transaction markers."""
    end = (await consumer.end_offsets([tp]))[tp]
    window = 64
    while end > 0:
        start = max(0, end - window)
        consumer.seek(tp, start)
        last = None
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.offset < end:
                    last = dict(record.headers).get(POSITION_HEADER) or last
        if last is not None:
            return last.decode()
        if start == 0:
            break
        window *= 8
    return None
