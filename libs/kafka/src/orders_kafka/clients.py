"""Kafka plumbing shared by the services that talk to Kafka."""

import asyncio
import contextlib
import logging
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from orders_contract.events import CONTENT_TYPE_HEADER
from orders_contract.settings import KafkaSettings
from orders_runtime import tracing

__all__ = [
    "Headers",
    "UnderReplicated",
    "ensure_topics",
    "new_producer",
    "record_headers",
    "start_reader",
    "stop_bounded",
]

Headers = list[tuple[str, bytes]]
"""Kafka record headers, as aiokafka takes and gives them."""

log = logging.getLogger(__name__)


class UnderReplicated(NamedTuple):
    """A topic that exists with fewer replicas than the settings ask for."""

    topic: str
    replication_factor: int
    """The fewest replicas of any of its partitions."""
    wanted: int


async def ensure_topics(settings: KafkaSettings, timeout: float = 30.0) -> list[UnderReplicated]:
    """Create the orders, status, dead-letter and quarantine topics unless they exist.

    Topics are created explicitly, with their partition count, replication factor,
    `min.insync.replicas` and retention, rather than by the broker's auto-creation on first use
    (one partition, the wrong count). The retention (`kafka_topic_retention_ms`, by default -1:
    forever) is what `make rebuild` relies on; a topic that exists already keeps its own.

    A topic that exists with fewer replicas than `kafka_replication_factor` is never silently
    used: it is logged as a warning and returned, for the caller's
    `kafka_topic_under_replicated` gauge (Kafka does not add replicas by itself; a partition
    reassignment does).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        configs = {"retention.ms": str(settings.kafka_topic_retention_ms)}
        if settings.kafka_min_insync_replicas is not None:  # else the broker's own default
            configs["min.insync.replicas"] = str(settings.kafka_min_insync_replicas)
        names = (
            settings.kafka_orders_topic,
            settings.kafka_status_topic,
            settings.kafka_dlq_topic,
            settings.kafka_quarantine_topic,
        )
        topics = [
            NewTopic(
                name,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                topic_configs=configs,
            )
            for name in names
        ]
        response = await asyncio.wait_for(admin.create_topics(topics), timeout)
        existing = []
        for topic, code, *_ in response.topic_errors:  # type: ignore[attr-defined]
            if code == TopicAlreadyExistsError.errno:
                existing.append(topic)
                continue
            if code:
                raise for_code(code)(f"cannot create topic {topic!r}")
            log.info("created topic %s", topic)
        if not existing:
            return []
        described = await asyncio.wait_for(admin.describe_topics(existing), timeout)
    finally:
        await admin.close()
    return _under_replicated(described, settings.kafka_replication_factor)


def _under_replicated(described: list[Any], wanted: int) -> list[UnderReplicated]:
    found = []
    for topic in described:
        partitions = topic.get("partitions") or []
        if topic.get("error_code") or not partitions:
            log.warning(
                "topic %s could not be described (error %s): its replication factor is unchecked",
                topic.get("topic"),
                topic.get("error_code"),
            )
            continue
        replicas = min(len(p["replicas"]) for p in partitions)
        if replicas < wanted:
            log.warning(
                "topic %s exists with replication factor %d, below the %d asked for "
                "(KAFKA_REPLICATION_FACTOR): it is used as it is; reassign its partitions "
                "to add replicas",
                topic["topic"],
                replicas,
                wanted,
            )
            found.append(UnderReplicated(topic["topic"], replicas, wanted))
    return found


def record_headers() -> Headers:
    """The headers of every record the services produce: the CloudEvents Kafka binding's
    structured-mode `content-type`, and the trace context of the current span (W3C
    `traceparent`, `tracestate`) when tracing is on. Built here only, so that every record
    carries the same."""
    return tracing.inject_headers([CONTENT_TYPE_HEADER])


def new_producer(settings: KafkaSettings, **options: object) -> AIOKafkaProducer:
    """A producer that loses nothing: every replica acknowledges, retries never duplicate."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        **options,
    )


async def start_reader(
    settings: KafkaSettings, topic: str, timeout: float = 30.0
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer of committed records only, in no group, assigned every partition of
    `topic` (the caller seeks; stop it with `stop_bounded`)."""
    # Subscribed at first: starting then waits for the topic's metadata (its partitions).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.unsubscribe()
        consumer.assign(partitions)
    except BaseException:
        await stop_bounded(consumer, "reader stop")
        raise
    return consumer, partitions


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
