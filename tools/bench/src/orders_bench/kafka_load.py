"""Kafka helpers of the bench: topics, preloading a backlog of orders, the event's size."""

import asyncio

from orders_contract.events import encode_placed
from orders_contract.models import Order, OrderCreate
from orders_contract.settings import KafkaSettings
from orders_kafka.clients import ensure_topics, new_producer, record_headers

__all__ = ["ORDER_JSON", "create_topic", "event_size", "preload"]

ORDER_JSON = '{"userId":1,"productName":"Gaming Laptop","quantity":2,"price":1299.99}'
"""The order every POST of the bench places: the README's example."""


def _order(user_id: int = 1) -> Order:
    body = f'{{"userId":{user_id},"productName":"Gaming Laptop","quantity":2,"price":1299.99}}'
    return Order.place(OrderCreate.model_validate_json(body))


def event_size() -> int:
    """Bytes of one `order.placed` event as the api publishes it (ProducerPerformance's record size)."""
    return len(encode_placed(_order()))


def _settings(bootstrap: str, topic: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=bootstrap, kafka_orders_topic=topic, kafka_dlq_topic=f"{topic}.dlq"
    )


async def create_topic(bootstrap: str, topic: str) -> None:
    """The topic (and its .dlq) with the stack's partition count."""
    await ensure_topics(_settings(bootstrap, topic))


async def preload(bootstrap: str, topic: str, count: int, chunk: int = 2000) -> list[str]:
    """Publish `count` placed orders as the api would (same event, key = orderId); their ids."""
    settings = _settings(bootstrap, topic)
    await ensure_topics(settings)
    producer = new_producer(settings, linger_ms=5)
    await asyncio.wait_for(producer.start(), 30)
    ids: list[str] = []
    try:
        for first in range(0, count, chunk):
            orders = [_order(1 + (first + i) % 1000) for i in range(min(chunk, count - first))]
            deliveries = [
                await producer.send(
                    topic, encode_placed(order), key=order.order_id.encode(), headers=record_headers()
                )
                for order in orders
            ]
            await asyncio.wait_for(asyncio.gather(*deliveries), 60)
            ids += [order.order_id for order in orders]
    finally:
        await asyncio.wait_for(producer.stop(), 10)
    return ids
