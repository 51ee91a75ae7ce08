"""`python -m orders_processor.rebuild` (`make rebuild`): the read model again, from Kafka alone.

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
from typing import Any

import orjson
from redis.asyncio import Redis

from orders_contract.events import POSITION_HEADER, OrderStatusChangedEvent, decode_status_event
from orders_contract.keys import Keys
from orders_contract.models import OrderStatus
from orders_kafka.clients import start_reader, stop_bounded
from orders_readmodel.stream import position_key
from orders_web.serving import configure_logging

from .settings import Settings, get_settings

__all__ = ["Rebuilt", "main", "rebuild"]

log = logging.getLogger("orders_processor.rebuild")

_FLUSH = 500


class NotFresh(RuntimeError):
    """The target already holds a read model."""


class Rebuilt:
    """What a rebuild did."""

    def __init__(self) -> None:
        self.events = 0
        self.orders = 0
        self.repeats = 0
        self.gaps = 0


async def rebuild(settings: Settings, redis: Redis, keys: Keys) -> Rebuilt:
    """Rebuild the read model under `keys` in `redis` from the status topic."""
    if await redis.exists(keys.all_orders, keys.updates):
        raise NotFresh(f"the target already holds orders under the prefix {keys.prefix!r}")
    topic = settings.kafka_status_topic
    consumer, partitions = await start_reader(settings, topic)
    done = Rebuilt()
    applied: dict[str, tuple[int, OrderStatus]] = {}
    last: tuple[str, OrderStatusChangedEvent] | None = None
    try:
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist")
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            pipe = redis.pipeline(transaction=False)
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    position = dict(record.headers)[POSITION_HEADER].decode()
                    event = decode_status_event(record.value)
                    if _apply(pipe, keys, event, position, applied, done) and (
                        last is None or position_key(position) > position_key(last[0])
                    ):
                        last = (position, event)
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            await pipe.execute()
        if last is not None:
            position, event = last
            await redis.xadd(keys.updates, _stream_fields(event), id=position)
    finally:
        await stop_bounded(consumer, "rebuild consumer stop")
    done.orders = len(applied)
    return done


def _apply(
    pipe: Any,
    keys: Keys,
    event: OrderStatusChangedEvent,
    position: str,
    applied: dict[str, tuple[int, OrderStatus]],
    done: Rebuilt,
) -> bool:
    """Queue the writes of one event; False for a version already applied (a repeat)."""
    order = event.data
    version, status = applied.get(order.order_id, (0, None))
    if order.version <= version:
        done.repeats += 1
        return False
    if order.version != version + 1:
        done.gaps += 1
        log.warning(
            "order %s: version %d follows %d (events missing)", order.order_id, order.version, version
        )
    fields = {name: str(value) for name, value in order.model_dump(mode="json").items() if value is not None}
    pipe.delete(keys.order(order.order_id))
    pipe.hset(keys.order(order.order_id), mapping=fields)
    pipe.zadd(keys.all_orders, {order.order_id: 0})
    pipe.zadd(keys.by_user(order.user_id), {order.order_id: 0})
    if status is not None and status != order.status:
        pipe.zrem(keys.by_status(status), order.order_id)
    pipe.zadd(keys.by_status(order.status), {order.order_id: 0})
    entry = {"status": order.status.value, "at": event.time, "version": order.version, "position": position}
    pipe.rpush(keys.history(order.order_id), orjson.dumps(entry))
    applied[order.order_id] = (order.version, order.status)
    done.events += 1
    return True


def _stream_fields(event: OrderStatusChangedEvent) -> dict[Any, Any]:
    """An update stream entry for `event`, as orders.lua's `record` writes it."""
    order = event.data
    hash_fields = {k: str(v) for k, v in order.model_dump(mode="json").items() if v is not None}
    return {
        "orderId": order.order_id,
        "userId": order.user_id,
        "status": order.status.value,
        "version": order.version,
        "at": event.time,
        "order": orjson.dumps(hash_fields).decode(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m orders_processor.rebuild", description=__doc__.split("\n")[0]
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
            return await rebuild(settings, redis, Keys(args.key_prefix))
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
