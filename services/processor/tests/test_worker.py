"""The worker on a real Kafka and Redis: lifecycle, concurrency, commits, replays, dead letters."""

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orders_common.events import encode_placed
from orders_common.kafka import ensure_topics
from orders_common.models import Order
from orders_common.models import OrderStatus as S
from orders_common.store import OrderStore
from orders_processor.settings import Settings
from orders_processor.worker import Worker
from orders_stack import Infra

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

StartWorker = Callable[..., Awaitable[tuple[Worker, asyncio.Event, "asyncio.Task[None]"]]]


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        kafka_consumer_group=test_env["KAFKA_CONSUMER_GROUP"],
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        processing_delay_ms=0,
        processor_commit_interval_ms=50,
    )


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def start_worker(settings: Settings, store: OrderStore) -> AsyncIterator[StartWorker]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> tuple[Worker, asyncio.Event, asyncio.Task[None]]:
        worker = Worker(settings.model_copy(update=overrides), store)
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        running.append((stopping, task))
        return worker, stopping, task

    yield start
    for stopping, _task in running:
        stopping.set()
    await asyncio.wait_for(asyncio.gather(*(task for _, task in running)), 60)


async def send(producer: AIOKafkaProducer, topic: str, orders: list[Order]) -> None:
    deliveries = [await producer.send(topic, encode_placed(o), key=o.order_id.encode()) for o in orders]
    await asyncio.gather(*deliveries)


async def wait_for_status(store: OrderStore, status: S, count: int, timeout: float = 60) -> None:
    key = store.keys.by_status(status)
    async with asyncio.timeout(timeout):
        while await store.redis.zcard(key) < count:
            await asyncio.sleep(0.05)


async def committed_and_end(
    settings: Settings,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.kafka_consumer_group)
        tps = [TopicPartition(settings.kafka_orders_topic, p) for p in range(settings.kafka_topic_partitions)]
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    return {tp: meta.offset for tp, meta in committed.items()}, {tp: n for tp, n in end.items() if n}


async def test_orders_complete_and_offsets_are_committed_to_the_end(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
) -> None:
    orders = [new_order(user_id=n % 7 + 1) for n in range(60)]
    await send(producer, settings.kafka_orders_topic, orders)
    worker, stopping, task = await start_worker()
    await wait_for_status(store, S.COMPLETED, 60)
    stopping.set()
    await asyncio.wait_for(task, 30)

    for order in orders:
        history = await store.history(order.order_id)
        assert [h.status for h in history] == [S.PLACED, S.PROCESSING, S.COMPLETED]
    assert await store.redis.zcard(store.keys.by_status(S.PROCESSING)) == 0
    assert worker.metrics.completed == 60
    committed, end = await committed_and_end(settings)
    assert committed == end


async def test_one_orders_delay_holds_up_no_other(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
) -> None:
    orders = [new_order() for _ in range(20)]
    await send(producer, settings.kafka_orders_topic, orders)
    await start_worker(processing_delay_ms=500)
    await wait_for_status(store, S.COMPLETED, 20)
    done = [await store.get(o.order_id) for o in orders]
    spans = sorted((o.processed_at, o.completed_at) for o in done if o and o.processed_at and o.completed_at)
    assert len(spans) == 20
    # Every order started PROCESSING before the first one COMPLETED: they waited side by side.
    first_completed = min(end for _, end in spans)
    assert all(start < first_completed for start, _ in spans)


async def test_replayed_events_add_nothing(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
) -> None:
    order = new_order()
    await send(producer, settings.kafka_orders_topic, [order, order, order])
    worker, *_ = await start_worker()
    async with asyncio.timeout(30):
        while worker.metrics.completed + worker.metrics.replayed < 3:
            await asyncio.sleep(0.05)
    assert [h.version for h in await store.history(order.order_id)] == [1, 2, 3]
    assert (worker.metrics.completed, worker.metrics.replayed) == (1, 2)


async def test_poison_messages_go_to_the_dlq_and_the_partition_moves_on(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
) -> None:
    good = new_order()
    key = good.order_id.encode()
    envelope = json.loads(encode_placed(good))
    poison = [
        b"not json at all",
        b'{"specversion": "1.0"}',
        json.dumps({**envelope, "type": "order.teleported"}).encode(),
        json.dumps({**envelope, "data": {**envelope["data"], "price": 0.001}}).encode(),
    ]
    topic = settings.kafka_orders_topic
    for value in poison:
        await producer.send_and_wait(topic, value, key=key)
    await producer.send_and_wait(topic, encode_placed(good), key=key)
    worker, stopping, task = await start_worker()
    await wait_for_status(store, S.COMPLETED, 1)
    stopping.set()
    await asyncio.wait_for(task, 30)
    committed, end = await committed_and_end(settings)
    assert committed == end, "the partition moved on past every poison message"

    consumer = AIOKafkaConsumer(
        settings.kafka_dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    dead: list[tuple[bytes | None, dict[str, bytes]]] = []
    try:
        async with asyncio.timeout(30):
            while len(dead) < len(poison):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    dead += [(r.value, dict(r.headers)) for r in records]
    finally:
        await consumer.stop()
    assert [value for value, _ in dead] == poison
    assert all(headers["dlq.reason"] and headers["dlq.topic"] == topic.encode() for _, headers in dead)
    assert b"type" in dead[2][1]["dlq.reason"]
    assert b"price" in dead[3][1]["dlq.reason"]
    assert worker.metrics.dead_lettered == len(poison)


async def test_a_restart_reprocesses_nothing_and_shutdown_drains(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
) -> None:
    orders = [new_order() for _ in range(30)]
    await send(producer, settings.kafka_orders_topic, orders)
    _first, stopping, task = await start_worker(processing_delay_ms=1000)
    await wait_for_status(store, S.PROCESSING, 30)
    stopping.set()  # as SIGTERM does: every order is mid-delay
    await asyncio.wait_for(task, 30)
    assert await store.redis.zcard(store.keys.by_status(S.COMPLETED)) == 30, "drained before exit"
    committed, end = await committed_and_end(settings)
    assert committed == end

    second, *_ = await start_worker()
    async with asyncio.timeout(30):
        while len(second.metrics.assigned) < settings.kafka_topic_partitions:
            await asyncio.sleep(0.05)
    late = new_order()
    await send(producer, settings.kafka_orders_topic, [late])
    await wait_for_status(store, S.COMPLETED, 31)
    assert second.metrics.received == 1, "only the new order, none of the 30 already committed"
    assert [h.version for h in await store.history(orders[0].order_id)] == [1, 2, 3]


async def test_shutdown_is_bounded_while_kafka_hangs(
    settings: Settings,
    store: OrderStore,
    producer: AIOKafkaProducer,
    start_worker: StartWorker,
    new_order: Callable[..., Order],
    infra: Infra,
) -> None:
    orders = [new_order() for _ in range(5)]
    await send(producer, settings.kafka_orders_topic, orders)
    _, stopping, task = await start_worker(processing_delay_ms=500)
    await wait_for_status(store, S.PROCESSING, 5)
    infra.kafka.signal(signal.SIGSTOP)  # Kafka hangs: connections stay open, nothing answers
    try:
        stopping.set()
        await asyncio.wait_for(task, 60)  # commits and leaving the group give up in time
    finally:
        infra.kafka.signal(signal.SIGCONT)
    assert await store.redis.zcard(store.keys.by_status(S.COMPLETED)) == 5, "in-flight orders drained"
