"""`python -m orders_processor` as a real process: health, metrics and SIGTERM."""

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from orders_common.events import encode_placed
from orders_common.kafka import ensure_topics
from orders_common.models import Order
from orders_common.models import OrderStatus as S
from orders_common.store import OrderStore
from orders_processor.settings import Settings
from orders_stack import Infra, Stack, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def test_sigterm_drains_in_flight_orders_and_exits_cleanly(
    infra: Infra,
    test_env: dict[str, str],
    store: OrderStore,
    new_order: Callable[..., Order],
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
    )
    await ensure_topics(settings)
    port = free_port()
    stack = Stack(infra, processor_port=port, env={**test_env, "PROCESSING_DELAY_MS": "1500"})
    try:
        proc = stack.start_service("processor")
        await asyncio.to_thread(stack.wait_ready, "processor")
        orders = [new_order() for _ in range(10)]
        producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for order in orders:
                await producer.send_and_wait(
                    settings.kafka_orders_topic, encode_placed(order), key=order.order_id.encode()
                )
        finally:
            await producer.stop()
        processing = store.keys.by_status(S.PROCESSING)
        async with asyncio.timeout(60):
            while await store.redis.zcard(processing) < len(orders):
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = (await client.get("/metrics")).text
        assert "processor_orders_in_flight 10" in metrics
        assert "processor_orders_assigned_partitions 6" in metrics

        proc.signal(signal.SIGTERM)  # mid-delay for every order
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, proc.tail()
        assert await store.redis.zcard(store.keys.by_status(S.COMPLETED)) == len(orders)
        assert await store.redis.zcard(processing) == 0
    finally:
        stack.stop()
