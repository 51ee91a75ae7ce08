"""orders_kafka.clients on a real broker: topics as the settings ask, records with our headers."""

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from orders_contract.events import CONTENT_TYPE
from orders_contract.settings import KafkaSettings
from orders_kafka.clients import ensure_topics, new_producer, record_headers, start_reader, stop_bounded
from orders_stack import Infra


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds KAFKA_REPLICATION_FACTOR"):
        KafkaSettings(kafka_replication_factor=1, kafka_min_insync_replicas=2)
    assert (
        KafkaSettings(kafka_replication_factor=3, kafka_min_insync_replicas=2).kafka_min_insync_replicas == 2
    )
    assert KafkaSettings().kafka_min_insync_replicas is None, "the brokers' own default"


def test_every_record_says_it_is_a_structured_cloudevent() -> None:
    headers = dict(record_headers())
    assert headers["content-type"] == CONTENT_TYPE.encode()


@pytest.mark.kafka
async def test_topics_get_their_partitions_and_retention_and_a_second_call_changes_nothing(
    infra: Infra, unique: str
) -> None:
    settings = KafkaSettings(
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        kafka_orders_topic=f"orders-{unique}",
        kafka_status_topic=f"orders-{unique}.status",
        kafka_dlq_topic=f"orders-{unique}.dlq",
        kafka_quarantine_topic=f"orders-{unique}.quarantine",
        kafka_topic_partitions=3,
        kafka_topic_retention_ms=3_600_000,
    )
    await ensure_topics(settings)
    await ensure_topics(settings)  # exists already: no error
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.kafka_orders_topic])
        assert len(described[0]["partitions"]) == 3
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.kafka_status_topic)]
        )
        resources = configs[0].resources  # type: ignore[attr-defined]  # (aiokafka types responses loosely)
        entries = {entry[0]: entry[1] for entry in resources[0][4]}
        assert entries["retention.ms"] == "3600000"
    finally:
        await admin.close()

    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.kafka_orders_topic, b"{}", key=b"k", partition=0, headers=record_headers()
        )
    finally:
        await stop_bounded(producer, "producer")
    reader, partitions = await start_reader(settings, settings.kafka_orders_topic)
    try:
        assert TopicPartition(settings.kafka_orders_topic, 0) in partitions
        batch = await reader.getmany(timeout_ms=10_000)
        records = [record for part in batch.values() for record in part]
        assert [record.value for record in records] == [b"{}"]
        assert dict(records[0].headers)["content-type"] == CONTENT_TYPE.encode()
    finally:
        await stop_bounded(reader, "reader")
