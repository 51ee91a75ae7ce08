"""The processor on a full Redis (maxmemory reached, `noeviction`), real Redis: readiness says
Redis refuses writes, and an order's writes are retried (one log line each, no traceback,
never dead-lettered) until Redis has room again."""

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest
from aiokafka import ConsumerRecord
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orders_contract.events import encode_placed
from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_processor.health import create_health_app
from orders_processor.metrics import current_value
from orders_processor.settings import Settings
from orders_processor.worker import Worker
from orders_readmodel.store import OrderStore
from orders_stack.ledger import redis_full

pytestmark = pytest.mark.redis


async def ready(worker: Worker) -> httpx.Response:
    app = create_health_app(worker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/health/ready")


async def test_readiness_says_a_full_redis_refuses_writes(store: OrderStore) -> None:
    worker = Worker(Settings(), store)
    async with redis_full(store.redis, store.keys.prefix + "filler"):
        full = await ready(worker)
    room = await ready(worker)
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "1"
    assert full.json()["data"]["redis"].startswith("down: refuses writes (OOM command not allowed")
    assert full.json()["data"]["kafka"].startswith("down:")  # no consumer in this test
    assert room.json()["data"]["redis"] == "ok"
    assert await store.redis.pttl(store.keys.health("processor")) > 0


async def test_readiness_of_an_unreachable_redis_names_the_error() -> None:
    dead = Redis(port=1, retry=Retry(NoBackoff(), 0))  # nothing listens on port 1
    try:
        response = await ready(Worker(Settings(), OrderStore(dead, Keys("test:dead:"))))
    finally:
        await dead.aclose()
    assert response.json()["data"]["redis"].startswith("down: ConnectionError: ")


async def test_writes_refused_while_full_are_retried_until_room(
    store: OrderStore, new_order: Callable[..., Order], caplog: pytest.LogCaptureFixture
) -> None:
    await store.load_functions()
    worker = Worker(Settings(processing_delay_ms=0), store)
    order = new_order()
    record = ConsumerRecord(
        "orders", 0, 7, 0, 0, order.order_id.encode(), encode_placed(order), None, 0, 0, ()
    )
    with caplog.at_level(logging.WARNING, logger="orders_processor"):
        async with redis_full(store.redis, store.keys.prefix + "filler"):
            task = asyncio.create_task(worker.consumer.handle(record))
            await asyncio.sleep(1)
            assert not task.done(), "nothing can be written while Redis is full"
            assert await store.get(order.order_id) is None
        await asyncio.wait_for(task, 10)
    done = await store.get(order.order_id)
    assert done is not None
    assert done.status is S.COMPLETED
    assert current_value(worker.handlers.metrics.dead_lettered) == 0
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying orders[0]@7")]
    assert len(retries) == current_value(worker.consumer.metrics.retries) >= 2
    assert all(r.exc_info is None for r in caplog.records), "one line per retry, no traceback"
