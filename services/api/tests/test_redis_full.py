"""The api on a full Redis (maxmemory reached, `noeviction`), real Kafka and Redis: 503 with
Retry-After (not 500), readiness that says Redis refuses writes, and a 503 that stays final
while Kafka hangs, because the abandon mark is written even when Redis is full."""

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import httpx
import pytest

from orders_api.app import create_app
from orders_api.settings import Settings
from orders_contract.events import OrderPlacedEvent
from orders_readmodel.store import OrderStore
from orders_stack import Infra
from orders_stack.ledger import read_records, redis_full

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

GOOD = {"userId": 1, "productName": "Gaming Laptop", "quantity": 2, "price": 1299.99}

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api(test_env: dict[str, str]) -> Client:
    """`async with api(**settings) as client`: the app on this test's topic and key prefix."""

    @asynccontextmanager
    async def running(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
        real = {
            "kafka_bootstrap_servers": test_env["KAFKA_BOOTSTRAP_SERVERS"],
            "kafka_orders_topic": test_env["KAFKA_ORDERS_TOPIC"],
            "kafka_dlq_topic": test_env["KAFKA_DLQ_TOPIC"],
            "redis_url": test_env["REDIS_URL"],
            "redis_key_prefix": test_env["REDIS_KEY_PREFIX"],
        }
        app = create_app(Settings(**{**real, **settings}))  # type: ignore[arg-type]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield client

    return running


async def test_a_full_redis_answers_503_with_retry_after_and_is_not_ready(
    api: Client, store: OrderStore
) -> None:
    async with api() as client:
        placed = await client.post("/api/orders", json=GOOD)
        assert placed.status_code == 202
        order_id = placed.json()["data"]["orderId"]
        async with redis_full(store.redis, store.keys.prefix + "filler"):
            keyed = await client.post("/api/orders", json=GOOD, headers={"Idempotency-Key": "k-1"})
            cancel = await client.post(f"/api/orders/{order_id}/cancel")
            ready = await client.get("/health/ready")
        # Room again: the same key places the order, and the api is ready.
        again = await client.post("/api/orders", json=GOOD, headers={"Idempotency-Key": "k-1"})
        ready_after = await client.get("/health/ready")
    for refused in (keyed, cancel):
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["success"] is False
    assert ready.status_code == 503
    assert ready.json()["data"]["kafka"] == "ok"
    assert ready.json()["data"]["redis"].startswith("down: refuses writes (OOM command not allowed")
    assert again.status_code == 202
    assert ready_after.status_code == 200
    assert ready_after.json()["data"] == {"kafka": "ok", "redis": "ok"}


async def test_a_503_stays_final_when_redis_is_full_and_kafka_hangs(
    api: Client, infra: Infra, test_env: dict[str, str], store: OrderStore
) -> None:
    """Issue 12's case: Redis full (so only the allow-oom abandon mark can be written) while
    Kafka hangs with the events in flight; Kafka takes them later, and none becomes an order."""
    async with api(kafka_send_timeout_ms=500) as client:
        assert (await client.post("/api/orders", json=GOOD)).status_code == 202  # connected
        async with redis_full(store.redis, store.keys.prefix + "filler"):
            infra.kafka.signal(signal.SIGSTOP)
            try:
                responses = await asyncio.gather(
                    *(client.post("/api/orders", json={**GOOD, "userId": 2}) for _ in range(5))
                )
            finally:
                infra.kafka.signal(signal.SIGCONT)
        assert {r.status_code for r in responses} == {503}
        records = await read_records(test_env["KAFKA_BOOTSTRAP_SERVERS"], test_env["KAFKA_ORDERS_TOPIC"], 6)
    events = [json.loads(r.value or b"null") for r in records]
    late = [OrderPlacedEvent.model_validate(e) for e in events if e["data"]["userId"] == 2]
    assert len(late) == 5, "Kafka took the events after the 503s"
    for event in late:  # what the processor does with each
        assert (await store.start(event.data.to_order(), event.id)).abandoned
    assert await store.count(partial(store.keys.by_user, 2)) == 0
