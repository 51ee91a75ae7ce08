"""`python -m orders_processor` as a real process: health, metrics and SIGTERM."""

import asyncio
import signal
from collections.abc import Callable
from functools import partial

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from orders_contract.events import encode_placed
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_stack import Infra, Stack, free_port
from orders_stack.metrics import metric_value

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
async def topic(test_env: dict[str, str]) -> str:
    """This test's orders topic, created with its partitions before any processor starts."""
    settings = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
    )
    await ensure_topics(settings)
    return settings.kafka_orders_topic


async def publish(infra: Infra, topic: str, orders: list[Order]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, encode_placed(o), key=o.order_id.encode()) for o in orders]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_sigterm_drains_in_flight_orders_and_exits_cleanly(
    infra: Infra,
    test_env: dict[str, str],
    topic: str,
    store: OrderStore,
    new_order: Callable[..., Order],
) -> None:
    port = free_port()
    stack = Stack(infra, processor_port=port, env={**test_env, "PROCESSING_DELAY_MS": "1500"})
    try:
        proc = stack.start_service("processor")
        await asyncio.to_thread(stack.wait_ready, "processor")
        orders = [new_order() for _ in range(10)]
        await publish(infra, topic, orders)
        processing = partial(store.keys.by_status, S.PROCESSING)
        async with asyncio.timeout(60):
            while await store.count(processing) < len(orders):
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = (await client.get("/metrics")).text
        assert "processor_orders_in_flight 10" in metrics
        assert "processor_orders_assigned_partitions 6" in metrics

        proc.signal(signal.SIGTERM)  # mid-delay for every order
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, proc.tail()
        assert await store.count(partial(store.keys.by_status, S.COMPLETED)) == len(orders)
        assert await store.count(processing) == 0
    finally:
        stack.stop()


async def test_three_processors_share_the_partitions(
    infra: Infra, test_env: dict[str, str], topic: str, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    """As `docker compose up --scale processor=3`: one group, the partitions split, nothing doubled."""
    stack = Stack(infra, env={**test_env, "PROCESSING_DELAY_MS": "50"})
    ports = [free_port() for _ in range(3)]
    try:
        for n, port in enumerate(ports):
            stack.start_service("processor", key=f"processor-{n}", PROCESSOR_PORT=str(port))
        for n in range(3):
            await asyncio.to_thread(stack.wait_ready, f"processor-{n}")

        async def gauge(port: int, name: str) -> int:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            return int(metric_value(text, name))

        async with asyncio.timeout(60):  # the group settles: two partitions each
            while [await gauge(p, "processor_orders_assigned_partitions") for p in ports] != [2, 2, 2]:
                await asyncio.sleep(0.2)

        orders = [new_order() for _ in range(300)]
        await publish(infra, topic, orders)
        completed = partial(store.keys.by_status, S.COMPLETED)
        async with asyncio.timeout(60):
            while await store.count(completed) < len(orders):
                await asyncio.sleep(0.1)
        received = [await gauge(p, "processor_orders_received_total") for p in ports]
        assert sum(received) == len(orders), "each order was taken by exactly one processor"
        assert all(r > 0 for r in received)
        for order in orders[:50]:
            assert [h.version for h in await store.history(order.order_id)] == [1, 2, 3]
    finally:
        stack.stop()
