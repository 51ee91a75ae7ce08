"""`python -m orders_processor.commands.rebuild` (`make rebuild`): the read model again, from Kafka alone.

Reads the status topic (`KAFKA_STATUS_TOPIC`) from its start with read_committed,
up to its end when the rebuild began, and writes every event into a fresh read
model: into the Redis of `--redis-url` (default `REDIS_URL`) under the key prefix
`--key-prefix` (default `REDIS_KEY_PREFIX`). Each event carries the order as it
is after the transition, the transition's time and version, and its position in
the original update stream, so the rebuilt orders, histories (times and
positions included), versions and indexes equal the original ones. Each event
goes to its order's shard (`REDIS_SHARDS`, recorded in the target). Each shard's
update stream is started with the shard's newest transition, under the position
its status relay reads back from the shard's partitions (relay_topic.py): the
transition's original one, so each relay goes on where it was. A topic written
with another number of shards is rebuilt all the same (and the events in another
shard's partitions counted as `misplaced`), but then a shard's stream position is
that of other orders' events, and a shard without orders gets no stream entry
(its relay stalls if its partitions hold events). Not rebuilt: Idempotency-Key
records and the api's abandoned-event marks (short-lived request state, not the
read model).

It needs every status event since the first order: the topics keep every record
(`KAFKA_TOPIC_RETENTION_MS=-1`, the default). A target that already holds orders
is refused: rebuild into an empty Redis or a new prefix, then point the services
at it.
"""

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from orders_contract.events import POSITION_HEADER, OrderStatusChangedEvent, decode_status_event
from orders_kafka.clients import start_reader, stop_bounded
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import position_key
from orders_web.serving import configure_logging

from ..settings import Settings, get_settings

__all__ = ["NotFresh", "Rebuilt", "main", "rebuild"]

log = logging.getLogger(__name__)


class NotFresh(RuntimeError):
    """The target already holds a read model."""


_Event = tuple[int, str, OrderStatusChangedEvent]
"""An event with its partition and its position in the original update stream."""


@dataclass
class Rebuilt:
    """What a rebuild did."""

    events: int = 0
    orders: int = 0
    repeats: int = 0
    gaps: int = 0
    misplaced: int = 0
    """Events in a partition of another shard than their order's: the topic was written with
    another number of shards."""
    newest: dict[int, tuple[str, OrderStatusChangedEvent]] = field(default_factory=dict)
    """Per shard: the applied event with the highest stream position, and that position."""
    read_back: dict[int, str] = field(default_factory=dict)
    """Per shard: the highest position in its partitions, which its relay goes on after."""


async def rebuild(settings: Settings, store: OrderStore) -> Rebuilt:
    """Rebuild the read model of `store` (which must hold none) from the status topic. Every
    write is the store's (orders.lua's `orders_restore`, `orders_restore_stream`)."""
    if await store.holds_orders():
        raise NotFresh(f"the target already holds orders under the prefix {store.keys.prefix!r}")
    try:
        await store.check_layout()
    except ValueError as exc:
        raise NotFresh(f"the target under the prefix {store.keys.prefix!r}: {exc}") from None
    await store.load_functions()
    topic = settings.kafka_status_topic
    consumer, partitions = await start_reader(settings, topic)
    done = Rebuilt()
    try:
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist")
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            events = await _next_events(consumer, remaining, end)
            _count(done, store, events, await store.restore_all([(e.data, e.time, p) for _, p, e in events]))
        if done.misplaced:
            log.warning(
                "%d events are in partitions of another shard than their order's: %s was written "
                "with another REDIS_SHARDS than %d",
                done.misplaced,
                topic,
                store.keys.shards,
            )
        for shard, (_, event) in sorted(done.newest.items()):
            if shard in done.read_back:  # else its relay starts from the start, as the stream does
                await store.restore_stream(event.data.order_id, done.read_back[shard], event.time)
    finally:
        await stop_bounded(consumer, "rebuild consumer stop")
    return done


async def _next_events(
    consumer: AIOKafkaConsumer, remaining: set[TopicPartition], end: dict[TopicPartition, int]
) -> list[_Event]:
    """The next fetched events before `end` (with their partitions and stream positions), in
    partition order; a partition read to its end leaves `remaining`."""
    events = []
    for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
        for record in records:
            if record.offset < end[tp]:
                position = dict(record.headers)[POSITION_HEADER].decode()
                events.append((tp.partition, position, decode_status_event(record.value)))
        if await consumer.position(tp) >= end[tp]:
            remaining.discard(tp)
    return events


def _newer(position: str, than: str | None) -> bool:
    return than is None or position_key(position) > position_key(than)


def _count(done: Rebuilt, store: OrderStore, events: list[_Event], before: list[int | None]) -> None:
    shards = store.keys.shards
    for (partition, position, event), version in zip(events, before, strict=True):
        order = event.data
        shard = store.keys.shard_of(order.order_id)
        if _newer(position, done.read_back.get(partition % shards)):  # positions of one shard only
            done.read_back[partition % shards] = position
        done.misplaced += partition % shards != shard
        if version is None:
            done.repeats += 1
            continue
        if order.version != version + 1:
            done.gaps += 1
            log.warning(
                "order %s: version %d follows %d (events missing)", order.order_id, order.version, version
            )
        done.events += 1
        done.orders += version == 0
        newest = done.newest.get(shard)
        if _newer(position, newest[0] if newest else None):
            done.newest[shard] = (position, event)


def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m orders_processor.commands.rebuild", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--redis-url", default=settings.redis_url, help="the target Redis (default REDIS_URL)"
    )
    parser.add_argument(
        "--key-prefix",
        default=settings.redis_key_prefix,
        help="the target key prefix (default REDIS_KEY_PREFIX)",
    )
    args = parser.parse_args(argv)
    configure_logging(settings.log_level)

    async def run() -> Rebuilt:
        # REDIS_SHARDS shards, on a cluster with REDIS_CLUSTER
        target = {"redis_url": args.redis_url, "redis_key_prefix": args.key_prefix}
        store = OrderStore.connect(settings.model_copy(update=target))
        try:
            return await rebuild(settings, store)
        finally:
            await store.redis.aclose()

    try:
        done = asyncio.run(run())
    except NotFresh as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 2
    print(
        f"rebuilt {done.orders} orders from {done.events} events of {settings.kafka_status_topic} "
        f"into {args.redis_url} (prefix {args.key_prefix!r}); repeats skipped: {done.repeats}, "
        f"version gaps: {done.gaps}, in another shard's partitions: {done.misplaced}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
