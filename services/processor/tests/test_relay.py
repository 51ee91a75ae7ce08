"""The status relay on a real Kafka and Redis: each transition once, in order, across restarts."""

import asyncio
from collections.abc import Callable

import pytest

from orders_contract.events import CONTENT_TYPE, POSITION_HEADER, decode_status_event
from orders_contract.keys import Keys
from orders_contract.models import Order
from orders_contract.models import OrderStatus as S
from orders_kafka.clients import ensure_topics
from orders_processor.metrics import current_value
from orders_processor.relay import Relay, last_published
from orders_processor.settings import Settings
from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_stack.ledger import read_records, status_events

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def run_relay(settings: Settings, store: OrderStore, until: Callable[[Relay], bool]) -> Relay:
    relay = Relay(settings, store)
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    try:
        async with asyncio.timeout(60):
            while not until(relay):
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
    return relay


async def test_every_transition_once_in_order_and_a_restart_goes_on_after_the_last(
    settings: Settings, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    await ensure_topics(settings)
    orders = [new_order(user_id=n % 3 + 1) for n in range(20)]
    for order in orders:
        await store.create(order)
        await store.transition(order.order_id, S.PROCESSING)
    first = await run_relay(settings, store, lambda relay: current_value(relay.metrics.published) >= 40)
    assert current_value(first.metrics.published) == 40
    for order in orders[:10]:
        await store.transition(order.order_id, S.COMPLETED)
    # A new relay (as after a crash or a new leader) starts after what Kafka holds.
    second = await run_relay(settings, store, lambda relay: current_value(relay.metrics.published) >= 10)
    assert current_value(second.metrics.published) == 10
    records = await read_records(
        settings.kafka_bootstrap_servers, settings.kafka_status_topic, 50, committed_only=True
    )
    assert len(records) == 50
    seen: dict[str, list[tuple[int, S]]] = {}
    for record in records:
        headers = dict(record.headers)
        assert headers["content-type"] == CONTENT_TYPE.encode()
        event = decode_status_event(record.value)
        assert record.key == event.data.order_id.encode() == event.subject.encode()
        assert event.id == f"{event.data.order_id}:{event.data.version}"
        seen.setdefault(event.data.order_id, []).append((event.data.version, event.data.status))
        assert POSITION_HEADER in headers
    for n, order in enumerate(orders):
        expected = [(1, S.PLACED), (2, S.PROCESSING)] + ([(3, S.COMPLETED)] if n < 10 else [])
        assert seen[order.order_id] == expected
    assert await last_published(settings) == await UpdateStream(store.redis, store.keys).head()


async def test_a_relay_further_behind_than_the_cap_logs_the_gap_and_goes_on(
    test_env: dict[str, str],
    store: OrderStore,
    new_order: Callable[..., Order],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=test_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_status_topic=test_env["KAFKA_STATUS_TOPIC"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        processor_commit_lag_ms=0,
    )
    capped = OrderStore(store.redis, store.keys, stream_maxlen=1000)
    for _ in range(6):  # nobody relays meanwhile: the cap trims the oldest entries away
        await capped.create_all([(new_order(), "") for _ in range(500)])
    left = await store.redis.xlen(store.keys.updates(0))
    assert left < 3000
    relay = await run_relay(settings, store, lambda relay: current_value(relay.metrics.published) >= left)
    assert current_value(relay.metrics.gaps) == 1
    assert current_value(relay.metrics.published) == left
    assert "trimmed past position" in caplog.text


class _OtherLease(Keys):
    """The same read model, another lease: as if two processors both believed they led."""

    def relay_lease(self, shard: int) -> str:
        return f"{self.prefix}relay:other-lease:{shard}"


async def test_two_relays_at_once_are_fenced_and_publish_each_transition_once(
    settings: Settings, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    """A zombie (a relay that lost its lease but runs on) is fenced by the fixed transactional.id:
    two relays publishing the same stream at the same time still publish each entry once."""
    await ensure_topics(settings)
    twin = OrderStore(store.redis, _OtherLease(store.keys.prefix))
    relays = [Relay(settings, store), Relay(settings, twin)]
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stopping)) for relay in relays]
    orders = [new_order() for _ in range(30)]
    try:
        for order in orders:
            await store.create(order)
            await asyncio.sleep(0.05)
            await store.transition(order.order_id, S.PROCESSING)
        final = {order.order_id: S.PROCESSING for order in orders}
        await status_events(settings.kafka_bootstrap_servers, settings.kafka_status_topic, final)
        await asyncio.sleep(2)  # anything repeated would come by now
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    records = await read_records(
        settings.kafka_bootstrap_servers, settings.kafka_status_topic, 60, committed_only=True
    )
    assert all(current_value(relay.metrics.leader) == 0 for relay in relays)
    seen = [
        (event.data.order_id, event.data.version)
        for event in map(decode_status_event, (r.value for r in records))
    ]
    assert len(seen) == 60
    assert sorted(seen) == sorted((order.order_id, version) for order in orders for version in (1, 2))
