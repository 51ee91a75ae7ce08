"""`make rebuild` on a real Kafka and Redis: the read model again from the status topic alone."""

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.commands.rebuild import NotFresh, rebuild
from orders_processor.metrics import current_value
from orders_processor.relay import Relay
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack.ledger import compare_read_models, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def readable(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    """Stream entries with the order's JSON text parsed (its key order is Redis's)."""
    return [(at, {**fields, "order": orjson.loads(fields["order"])}) for at, fields in entries]


async def test_the_rebuilt_read_model_equals_the_original(
    test_env: dict[str, str], store: OrderStore, new_order: Callable[..., Order]
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_status_topic=test_env["KAFKA_STATUS_TOPIC"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        processor_commit_lag_ms=0,
    )
    await ensure_topics(settings)
    orders = [new_order(user_id=n % 3 + 1) for n in range(12)]
    for n, order in enumerate(orders):
        await store.create(order)
        await store.transition(order.order_id, S.CANCELLED if n % 4 == 0 else S.PROCESSING)
        if n % 4 == 1:
            await store.transition(order.order_id, S.COMPLETED)
    relay = Relay(settings, store)
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    try:
        async with asyncio.timeout(60):
            while current_value(relay.metrics.published) < 27:
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
    # A committed transaction's markers reach the partitions a little after the commit: until
    # then read_committed readers (the rebuild too) end before its records.
    await read_records(settings.kafka_bootstrap_servers, settings.kafka_status_topic, 27, committed_only=True)

    rebuilt = OrderStore(store.redis, Keys(store.keys.prefix + "rebuilt:"))
    done = await rebuild(settings, rebuilt)
    assert (done.orders, done.events, done.repeats, done.gaps) == (12, 27, 0, 0)
    assert await compare_read_models(store, rebuilt) == []
    newest = readable(await store.redis.xrevrange(store.keys.updates(0), count=1))
    assert readable(await store.redis.xrange(rebuilt.keys.updates(0))) == newest, "the relay goes on there"
    with pytest.raises(NotFresh):
        await rebuild(settings, rebuilt)
