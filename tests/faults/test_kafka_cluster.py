"""Kafka as a cluster of three (`make up KAFKA_BROKERS=3`): replicated topics, a lost leader.

The module starts its own three-node KRaft cluster and Redis (`Infra(kafka_brokers=3)`),
stopped at its end whatever happened. The stack on it gets the three-broker bootstrap list,
replication factor 3 and `min.insync.replicas=2`. The broker that leads most partitions of
`orders` is SIGKILLed while orders arrive at a steady rate and started again later: the
ledger audit (orders_stack.ledger) finds every acknowledged order exactly once, in the read
model, on the topic and on `orders.status`, and nothing else. A topic found with fewer
replicas than asked for is reported (ensure_topics' warning and result, the services'
`kafka_topic_under_replicated` gauge); with two of three nodes gone an order gets 503 with
Retry-After within the send timeout.
"""

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from orders_contract.settings import KafkaSettings, RedisSettings
from orders_kafka.clients import UnderReplicated, ensure_topics
from orders_readmodel.store import OrderStore
from orders_stack import Infra, Stack
from orders_stack.ledger import Ledger, audit, place_orders, settle, until

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.redis, pytest.mark.timeout(240)]

COUNT = 2000
RATE = 200.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Three Kafka nodes and Redis for this module alone: its tests kill brokers."""
    with Infra(
        tmp_path_factory.mktemp("kafka3"), kafka_port=0, redis_port=0, kafka_brokers=3, kafka_heap="384m"
    ) as running:
        yield running


@pytest.fixture
async def admin(cluster: Infra) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def _settings(cluster: Infra, unique: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=cluster.kafka_bootstrap,
        kafka_orders_topic=f"orders-{unique}",
        kafka_status_topic=f"orders-{unique}.status",
        kafka_dlq_topic=f"orders-{unique}.dlq",
        kafka_quarantine_topic=f"orders-{unique}.quarantine",
        kafka_replication_factor=3,
        kafka_min_insync_replicas=2,
    )


async def _described(admin: AIOKafkaAdminClient, topics: list[str]) -> list[Any]:
    """The topics' metadata, once every broker knows them (a new topic takes a moment). The
    admin client asks any node it knows: one just killed answers NodeNotReadyError or a
    connection error until the client's metadata drops it, so those are asked again."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(KafkaError):
                described = await admin.describe_topics(topics)
                if all(not t["error_code"] and t["partitions"] for t in described):
                    return described
            await asyncio.sleep(0.2)


async def test_the_cluster_replicates_topics_and_reports_an_under_replicated_one(
    cluster: Infra, admin: AIOKafkaAdminClient, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(cluster.kafka_bootstrap.split(",")) == 3
    assert cluster.kafka_env == {"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"}
    settings = _settings(cluster, unique)
    # The orders topic exists already, made by someone with one replica.
    await admin.create_topics([NewTopic(settings.kafka_orders_topic, 6, 1)])
    with caplog.at_level(logging.WARNING, logger="orders_kafka.clients"):
        found = await ensure_topics(settings)
    assert found == [UnderReplicated(settings.kafka_orders_topic, 1, 3)]
    assert f"topic {settings.kafka_orders_topic} exists with replication factor 1, below the 3" in caplog.text
    # The topics it created have three replicas each, two of them needed in sync.
    created = [settings.kafka_status_topic, settings.kafka_dlq_topic, settings.kafka_quarantine_topic]
    for topic in await _described(admin, created):
        assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, topic
    (described,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, settings.kafka_status_topic, {"min.insync.replicas": None})]
    )
    (resource,) = described.resources  # type: ignore[attr-defined]
    assert [(entry[0], entry[1]) for entry in resource[4]] == [("min.insync.replicas", "2")]
    # Once all are right, nothing is reported.
    fresh = _settings(cluster, unique + "-b")
    assert await ensure_topics(fresh) == []
    await _described(admin, [fresh.kafka_orders_topic])
    assert await ensure_topics(fresh) == []
    # The brokers' own topics are replicated too, and a replica out of sync never leads.
    wanted = {
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
    }
    for node in ("1", "2", "3"):
        (broker,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, node, dict.fromkeys(wanted))]
        )
        (entries,) = broker.resources  # type: ignore[attr-defined]
        assert {entry[0]: entry[1] for entry in entries[4]} == wanted


async def _leaders(admin: AIOKafkaAdminClient, topic: str) -> dict[int, int]:
    (described,) = await _described(admin, [topic])
    return {p["partition"]: p["leader"] for p in described["partitions"]}


async def _probe_after_kill(cluster: Infra, topic: str, node: int) -> float:
    """SIGKILL `node` with an idempotent acks=all send in flight to a partition it leads:
    the seconds until that send is acknowledged (a new leader took over)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kafkas[node].signal, signal.SIGKILL)
        delivery = await producer.send(topic, b"during", partition=0)
        await asyncio.wait_for(delivery, 30)
        return time.monotonic() - killed
    finally:
        await asyncio.wait_for(producer.stop(), 10)


async def test_the_leader_of_orders_killed_mid_load_and_restarted(
    cluster: Infra, admin: AIOKafkaAdminClient, unique: str
) -> None:
    env = {
        "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
        "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
        "KAFKA_STATUS_TOPIC": f"orders-{unique}.status",
        "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
        "REDIS_KEY_PREFIX": f"kafka3:{unique}:",
        "PROCESSING_DELAY_MS": "200",
        "KAFKA_SEND_TIMEOUT_MS": "5000",
        "PROCESSOR_DRAIN_TIMEOUT_MS": "10000",
        "BIND_HOST": "127.0.0.1",
    }
    topic = env["KAFKA_ORDERS_TOPIC"]
    stack = Stack(cluster, api_port=0, query_port=0, processor_port=0, env=env)
    store = OrderStore.connect(
        RedisSettings(redis_url=cluster.redis_url, redis_key_prefix=env["REDIS_KEY_PREFIX"])
    )
    killed: int | None = None
    load: asyncio.Task[Ledger] | None = None
    # Someone made the dead-letter topic with one replica: both services say so at start.
    dlq = env["KAFKA_DLQ_TOPIC"]
    await admin.create_topics([NewTopic(dlq, 6, 1)])
    try:
        with stack:
            assert stack.service_env()["KAFKA_REPLICATION_FACTOR"] == "3"
            await _until_reported_under_replicated(stack, dlq)
            leaders = await _leaders(admin, topic)
            (described,) = await _described(admin, [topic])
            assert {len(p["replicas"]) for p in described["partitions"]} == {3}
            victim = Counter(leaders.values()).most_common(1)[0][0]
            # A probe topic whose one partition the victim leads: the leader loss, timed.
            probe = f"probe-{unique}"
            others = [n for n in (1, 2, 3) if n != victim]
            await admin.create_topics([NewTopic(probe, -1, -1, replica_assignments={0: [victim, *others]})])

            ledger = Ledger()
            load = asyncio.create_task(
                place_orders(stack.api_url, COUNT, rate=RATE, cancel_every=10, ledger=ledger)
            )
            await until(ledger, COUNT // 3)
            killed = victim
            took = await _probe_after_kill(cluster, probe, victim)
            print(
                f"leader loss: a send in flight to node {victim}'s partition acked {took:.1f}s after SIGKILL"
            )
            await asyncio.sleep(5)
            moved = await _leaders(admin, topic)
            assert victim not in moved.values(), moved
            await asyncio.to_thread(cluster.start_broker, victim)
            killed = None
            ledger = await load
            await settle(store, ledger)
            result = await audit(
                store, ledger, cluster.kafka_bootstrap, topic, status_topic=env["KAFKA_STATUS_TOPIC"]
            )
            assert not result.problems, result.problems
            assert len(ledger.acked) == COUNT - ledger.gave_up
            assert result.in_model == len(ledger.acked)
            assert set(ledger.answers) <= {200, 202, 409, 404, 503}, ledger.answers
            print(f"answers {dict(ledger.answers)}; acked {len(ledger.acked)}, gave up {ledger.gave_up}")
            await asyncio.sleep(2)
            assert await store.count(store.keys.all_orders) == result.in_model

            killed = others[0]  # the helper kills both others: no quorum is left
            await _no_quorum_is_a_503(cluster, stack, victim, topic)
    finally:
        if load is not None and not load.done():  # failed mid-load: the clients stop first
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        await store.redis.aclose()
        if killed is not None:
            # Nodes left without a quorum would not stop on SIGTERM: end the cluster's test here.
            for node in sorted(cluster.kafkas):
                await asyncio.to_thread(cluster.kill_broker, node)


async def _until_reported_under_replicated(stack: Stack, topic: str) -> None:
    """Both services' gauges say `topic` has fewer replicas than the settings ask for."""
    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(30):
        for url, name in ((stack.api_url, "api"), (stack.processor_url, "processor")):
            gauge = f"{name}_kafka_topic_under_replicated"
            while f'{gauge}{{topic="{topic}"}} 1.0' not in (await http.get(f"{url}/metrics")).text:
                await asyncio.sleep(0.2)


async def _no_quorum_is_a_503(cluster: Infra, stack: Stack, victim: int, topic: str) -> None:
    """Two of three nodes gone: no partition can take a write (min.insync.replicas=2, and no
    controller quorum). An order then gets 503 with Retry-After within the send timeout, never
    a hang (the client would give up after 30 s)."""
    others = [n for n in (1, 2, 3) if n != victim]
    for node in others:
        cluster.kafkas[node].signal(signal.SIGKILL)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        started = time.monotonic()
        refused = await api.post(
            "/api/orders", json={"userId": 98, "productName": "no quorum", "quantity": 1, "price": 5}
        )
        waited = time.monotonic() - started
        metrics = (await api.get("/metrics")).text
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"]
    assert f'api_kafka_topic_under_replicated{{topic="{topic}"}}' not in metrics
    print(f"two nodes down: 503 with Retry-After {refused.headers['Retry-After']} after {waited:.1f}s")
