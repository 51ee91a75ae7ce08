"""The worker on a real Kafka and Redis: lifecycle, concurrency, commits, replays, dead letters."""

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orders_contract.events import encode_cancelled, encode_placed
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.metrics import current_value
from orders_processor.settings import Settings
from orders_processor.worker import Worker
from orders_readmodel.store import OrderStore
from orders_stack import Infra
from orders_stack.ledger import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@dataclass
class Running:
    worker: Worker
    stopping: asyncio.Event
    task: "asyncio.Task[None]"

    async def stop(self, timeout: float = 30) -> None:
        """As SIGTERM does: stop fetching, drain, commit, leave the group."""
        self.stopping.set()
        await asyncio.wait_for(self.task, timeout)


@dataclass
class Rig:
    """This test's topic, group and key prefix, a producer to feed them and workers to run."""

    settings: Settings
    store: OrderStore
    producer: AIOKafkaProducer
    new_order: Callable[..., Order]
    running: list[Running] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return self.settings.kafka_orders_topic

    def start(self, **overrides: Any) -> Running:
        worker = Worker(self.settings.model_copy(update=overrides), self.store)
        stopping = asyncio.Event()
        running = Running(worker, stopping, asyncio.create_task(worker.run(stopping)))
        self.running.append(running)
        return running

    async def send(self, orders: list[Order]) -> None:
        deliveries = [
            await self.producer.send(self.topic, encode_placed(o), key=o.order_id.encode()) for o in orders
        ]
        await asyncio.gather(*deliveries)

    async def count(self, status: S) -> int:
        return int(await self.store.count(partial(self.store.keys.by_status, status)))

    async def wait_for(self, status: S, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while await self.count(status) < count:
                await asyncio.sleep(0.05)

    async def dead_letters(self, count: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
        """The first `count` records of the dead-letter topic: value and headers."""
        records = await read_records(
            self.settings.kafka_bootstrap_servers, self.settings.kafka_dlq_topic, count
        )
        return [(r.value, dict(r.headers)) for r in records]

    async def committed_and_end(self) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """The group's committed offsets and the partitions' end offsets (non-empty ones)."""
        bootstrap = self.settings.kafka_bootstrap_servers
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.kafka_consumer_group)
            partitions = range(self.settings.kafka_topic_partitions)
            end = await consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        finally:
            await consumer.stop()
            await admin.close()
        return {tp: meta.offset for tp, meta in committed.items()}, {tp: n for tp, n in end.items() if n}


@pytest.fixture
async def rig(
    test_env: dict[str, str], store: OrderStore, new_order: Callable[..., Order]
) -> AsyncIterator[Rig]:
    settings = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_orders_topic=test_env["KAFKA_ORDERS_TOPIC"],
        kafka_dlq_topic=test_env["KAFKA_DLQ_TOPIC"],
        kafka_consumer_group=test_env["KAFKA_CONSUMER_GROUP"],
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        processing_delay_ms=0,
        processor_commit_interval_ms=50,
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    rig = Rig(settings, store, producer, new_order)
    try:
        yield rig
    finally:
        for running in rig.running:
            running.stopping.set()
        await asyncio.wait_for(asyncio.gather(*(r.task for r in rig.running)), 60)
        await producer.stop()


async def test_orders_complete_and_offsets_are_committed_to_the_end(rig: Rig) -> None:
    orders = [rig.new_order(user_id=n % 7 + 1) for n in range(60)]
    await rig.send(orders)
    running = rig.start()
    await rig.wait_for(S.COMPLETED, 60)
    await running.stop()

    for order in orders:
        history = await rig.store.history(order.order_id)
        assert [h.status for h in history] == [S.PLACED, S.PROCESSING, S.COMPLETED]
    assert await rig.count(S.PROCESSING) == 0
    assert current_value(running.worker.handlers.metrics.completed) == 60
    committed, end = await rig.committed_and_end()
    assert committed == end


async def test_one_orders_delay_holds_up_no_other(rig: Rig) -> None:
    orders = [rig.new_order() for _ in range(20)]
    await rig.send(orders)
    rig.start(processing_delay_ms=500)
    await rig.wait_for(S.COMPLETED, 20)
    done = [await rig.store.get(o.order_id) for o in orders]
    spans = sorted((o.processed_at, o.completed_at) for o in done if o and o.processed_at and o.completed_at)
    assert len(spans) == 20
    # Every order started PROCESSING before the first one COMPLETED: they waited side by side.
    first_completed = min(end for _, end in spans)
    assert all(start < first_completed for start, _ in spans)


async def test_replayed_events_add_nothing(rig: Rig) -> None:
    order = rig.new_order()
    await rig.send([order, order, order])
    metrics = rig.start().worker.handlers.metrics
    async with asyncio.timeout(30):
        while current_value(metrics.completed) + current_value(metrics.replayed) < 3:
            await asyncio.sleep(0.05)
    assert [h.version for h in await rig.store.history(order.order_id)] == [1, 2, 3]
    assert (current_value(metrics.completed), current_value(metrics.replayed)) == (1, 2)


async def test_poison_messages_go_to_the_dlq_and_the_partition_moves_on(rig: Rig) -> None:
    good = rig.new_order()
    key = good.order_id.encode()
    envelope = json.loads(encode_placed(good))
    poison = [
        b"not json at all",
        b'{"specversion": "1.0"}',
        json.dumps({**envelope, "type": "order.teleported"}).encode(),
        json.dumps({**envelope, "data": {**envelope["data"], "price": 0.001}}).encode(),
    ]
    for value in poison:
        await rig.producer.send_and_wait(rig.topic, value, key=key)
    await rig.send([good])
    running = rig.start()
    await rig.wait_for(S.COMPLETED, 1)
    await running.stop()
    committed, end = await rig.committed_and_end()
    assert committed == end, "the partition moved on past every poison message"

    dead = await rig.dead_letters(len(poison))
    assert [value for value, _ in dead] == poison
    assert all(headers["dlq.reason"] and headers["dlq.topic"] == rig.topic.encode() for _, headers in dead)
    assert b"type" in dead[2][1]["dlq.reason"]
    assert b"price" in dead[3][1]["dlq.reason"]
    assert current_value(running.worker.handlers.metrics.dead_lettered) == len(poison)


async def test_cancelled_and_abandoned_orders_are_left_alone(rig: Rig) -> None:
    cancelled, abandoned, finished = rig.new_order(), rig.new_order(), rig.new_order()
    # The api cancelled one order before the processor read it, and answered 503 for
    # another, whose event Kafka took anyway.
    await rig.store.create(cancelled)
    await rig.store.transition(cancelled.order_id, S.CANCELLED)
    assert not await rig.store.abandon([(abandoned.order_id, "event-503")], ttl_s=60)
    await rig.send([cancelled, finished])
    await rig.producer.send_and_wait(
        rig.topic, encode_placed(abandoned, "event-503"), key=abandoned.order_id.encode()
    )
    at = "2026-01-01T00:00:00.000Z"
    for order in (cancelled, finished):  # a replayed cancellation, and an impossible one
        await rig.producer.send_and_wait(
            rig.topic, encode_cancelled(order.order_id, at), key=order.order_id.encode()
        )
    running = rig.start()
    dead = await rig.dead_letters(1)
    await running.stop()

    assert [h.status for h in await rig.store.history(cancelled.order_id)] == [S.PLACED, S.CANCELLED]
    assert await rig.store.get(abandoned.order_id) is None
    assert [h.status for h in await rig.store.history(finished.order_id)] == [
        S.PLACED,
        S.PROCESSING,
        S.COMPLETED,
    ]
    assert dead[0][0] is not None
    assert json.loads(dead[0][0])["subject"] == finished.order_id
    assert b"impossible transition" in dead[0][1]["dlq.reason"]
    handled = running.worker.handlers.metrics
    assert (current_value(handled.abandoned), current_value(handled.dead_lettered)) == (1, 1)
    committed, end = await rig.committed_and_end()
    assert committed == end


async def test_a_restart_reprocesses_nothing_and_shutdown_drains(rig: Rig) -> None:
    orders = [rig.new_order() for _ in range(30)]
    await rig.send(orders)
    first = rig.start(processing_delay_ms=1000)
    await rig.wait_for(S.PROCESSING, 30)
    await first.stop()  # every order is mid-delay
    assert await rig.count(S.COMPLETED) == 30, "drained before exit"
    committed, end = await rig.committed_and_end()
    assert committed == end

    second = rig.start().worker.consumer
    async with asyncio.timeout(30):
        while len(second.assigned) < rig.settings.kafka_topic_partitions:
            await asyncio.sleep(0.05)
    await rig.send([rig.new_order()])
    await rig.wait_for(S.COMPLETED, 31)
    assert current_value(second.metrics.received) == 1, "only the new order, none of the 30 already committed"
    assert [h.version for h in await rig.store.history(orders[0].order_id)] == [1, 2, 3]


async def test_shutdown_is_bounded_while_kafka_hangs(rig: Rig, infra: Infra) -> None:
    await rig.send([rig.new_order() for _ in range(5)])
    running = rig.start(processing_delay_ms=500)
    await rig.wait_for(S.PROCESSING, 5)
    infra.kafka.signal(signal.SIGSTOP)  # Kafka hangs: connections stay open, nothing answers
    try:
        await running.stop(timeout=60)  # commits and leaving the group give up in time
    finally:
        infra.kafka.signal(signal.SIGCONT)
    assert await rig.count(S.COMPLETED) == 5, "in-flight orders drained"
