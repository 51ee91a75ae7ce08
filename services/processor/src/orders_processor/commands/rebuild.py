"""`python -m orders_processor.commands.rebuild` (`make rebuild`): the read model again, from Kafka alone.

Reads the status topic (`KAFKA_STATUS_TOPIC`) from its start with read_committed,
up to its end when the rebuild began, and writes every event into a fresh read
model: into the Redis of `--redis-url` (default `REDIS_URL`) under the key prefix
`--key-prefix` (default `REDIS_KEY_PREFIX`). Each event carries the order as it
is after the transition, the transition's time and version, and its position in
the original update stream, so the rebuilt orders, histories (times and
positions included), versions and indexes equal the original ones. The update
stream is started with the last transition under its original position, so the
status relay goes on where it was. Not rebuilt: Idempotency-Key records and the
api's abandoned-event marks (short-lived request state, not the read model).

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

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from orders_contract.events import POSITION_HEADER, OrderStatusChangedEvent, decode_status_event
from orders_contract.keys import Keys
from orders_kafka.clients import start_reader, stop_bounded
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import position_key
from orders_web.serving import configure_logging

from ..settings import Settings, get_settings

__all__ = ["NotFresh", "Rebuilt", "main", "rebuild"]

log = logging.getLogger(__name__)


class NotFresh(RuntimeError):
    """The target already holds a read model."""


class Rebuilt:
    """What a rebuild did."""

    def __init__(self) -> None:
        self.events = 0
        self.orders = 0
        self.repeats = 0
        self.gaps = 0
        self.newest: tuple[str, OrderStatusChangedEvent] | None = None
        """The applied event with the highest stream position, and that position."""


async def rebuild(settings: Settings, store: OrderStore) -> Rebuilt:
    """Rebuild the read model of `store` (which must hold none) from the status topic. Every
    write is the store's (orders.lua's `orders_restore`, `orders_restore_stream`)."""
    if await store.holds_orders():
        raise NotFresh(f"the target already holds orders under the prefix {store.keys.prefix!r}")
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
            _count(done, events, await store.restore_all([(e.data, e.time, p) for p, e in events]))
        if done.newest is not None:
            position, event = done.newest
            await store.restore_stream(event.data.order_id, position, event.time)
    finally:
        await stop_bounded(consumer, "rebuild consumer stop")
    return done


async def _next_events(
    consumer: AIOKafkaConsumer, remaining: set[TopicPartition], end: dict[TopicPartition, int]
) -> list[tuple[str, OrderStatusChangedEvent]]:
    """The next fetched events before `end` (with their stream positions), in partition order;
    a partition read to its end leaves `remaining`."""
    events = []
    for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
        for record in records:
            if record.offset < end[tp]:
                position = dict(record.headers)[POSITION_HEADER].decode()
                events.append((position, decode_status_event(record.value)))
        if await consumer.position(tp) >= end[tp]:
            remaining.discard(tp)
    return events


def _count(
    done: Rebuilt, events: list[tuple[str, OrderStatusChangedEvent]], before: list[int | None]
) -> None:
    for (position, event), version in zip(events, before, strict=True):
        order = event.data
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
        if done.newest is None or position_key(position) > position_key(done.newest[0]):
            done.newest = (position, event)


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
        redis = Redis.from_url(args.redis_url, decode_responses=True)
        try:
            return await rebuild(settings, OrderStore(redis, Keys(args.key_prefix)))
        finally:
            await redis.aclose()

    try:
        done = asyncio.run(run())
    except NotFresh as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 2
    print(
        f"rebuilt {done.orders} orders from {done.events} events of {settings.kafka_status_topic} "
        f"into {args.redis_url} (prefix {args.key_prefix!r}); repeats skipped: {done.repeats}, "
        f"version gaps: {done.gaps}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
