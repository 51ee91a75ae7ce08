"""Kafka plumbing shared by the services that talk to Kafka."""

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from . import tracing
from .settings import KafkaSettings

__all__ = ["Headers", "ensure_topics", "new_producer", "record_headers", "stop_bounded"]

Headers = list[tuple[str, bytes]]
"""Kafka record headers, as aiokafka takes and gives them."""

log = logging.getLogger(__name__)


async def ensure_topics(settings: KafkaSettings, timeout: float = 30.0) -> None:
    """Create the orders, dead-letter and quarantine topics unless they exist.

    Topics are created explicitly, with their partition count, rather than by
    the broker's auto-creation on first use (one partition, the wrong count).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        topics = [
            NewTopic(name, settings.kafka_topic_partitions, settings.kafka_replication_factor)
            for name in (
                settings.kafka_orders_topic,
                settings.kafka_dlq_topic,
                settings.kafka_quarantine_topic,
            )
        ]
        response = await asyncio.wait_for(admin.create_topics(topics), timeout)
        for topic, code, *_ in response.topic_errors:  # type: ignore[attr-defined]
            if code == TopicAlreadyExistsError.errno:
                continue
            if code:
                raise for_code(code)(f"cannot create topic {topic!r}")
            log.info("created topic %s", topic)
    finally:
        await admin.close()


def record_headers() -> Headers:
    """The headers of every record the services produce: the trace context of the current span
    (W3C `traceparent`, `tracestate`) when tracing is on. Built here only, so that every record
    carries the same."""
    return tracing.inject_headers([])


def new_producer(settings: KafkaSettings, **options: object) -> AIOKafkaProducer:
    """A producer that loses nothing: every replica acknowledges, retries never duplicate."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        **options,
    )


async def stop_bounded(client: AIOKafkaProducer | AIOKafkaConsumer, what: str, timeout: float = 10.0) -> None:
    """Stop a Kafka client, giving up after `timeout`.

    An idempotent producer's stop, or a consumer leaving its group, can wait
    forever while Kafka does not answer. After giving up, the client's
    connections are closed anyway, so nothing is left open.
    """
    try:
        await asyncio.wait_for(client.stop(), timeout)  # type: ignore[no-untyped-call]
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("%s did not finish cleanly: %r", what, exc)
        # What stop() had not reached yet: the background task that would open new
        # connections (aiokafka's private parts, no public way), then the sockets.
        task: Any
        connections: Any
        if isinstance(client, AIOKafkaProducer):
            task, connections = client._sender, client.client
        else:
            task, connections = client._fetcher, client._client
        remaining = [connections.close()] if task is None else [task.close(), connections.close()]
        for step in remaining:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step, 2)
