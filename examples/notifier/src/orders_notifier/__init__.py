"""A downstream service in twenty lines: it reacts to orders that end COMPLETED or CANCELLED.

It subscribes to `orders.status` in a consumer group of its own, reads committed records only
(read_committed: each transition exactly once, in order per order), parses each record with
the CloudEvents SDK's Kafka binding, and for a final status logs it or POSTs the order to a
webhook. It commits after notifying, so a crash notifies again (at least once): a webhook
deduplicates by (orderId, version), which names one transition for good.
"""

import logging

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event

__all__ = ["FINAL", "notify"]

FINAL = {"COMPLETED", "CANCELLED"}
log = logging.getLogger("orders_notifier")


async def notify(bootstrap: str, topic: str, group: str, webhook: str | None = None) -> None:
    """Notify about every order that ends COMPLETED or CANCELLED, until cancelled."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async for record in consumer:
                message = KafkaMessage(dict(record.headers), record.key, record.value or b"")
                order = from_kafka_event(message).get_data()
                if isinstance(order, dict) and order["status"] in FINAL:
                    log.info(
                        "order %s is %s (version %d)", order["orderId"], order["status"], order["version"]
                    )
                    if webhook:
                        (await http.post(webhook, json=order)).raise_for_status()
                await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
    finally:
        await consumer.stop()
