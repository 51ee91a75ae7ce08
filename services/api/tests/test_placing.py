"""The protocol of placing and cancelling (orders_api.placing), without HTTP, on real Kafka and Redis."""

import json
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest

from orders_api.placing import (
    BatchPlaced,
    Cancelled,
    KeyReused,
    NotFound,
    OrderDesk,
    Placed,
    TooLate,
    Unavailable,
)
from orders_api.publisher import KafkaUnavailable, Publisher
from orders_api.settings import Settings
from orders_contract.events import OrderPlacedEvent, decode_event
from orders_contract.models import OrderCreate, OrderStatus
from orders_kafka.clients import Headers
from orders_readmodel.store import OrderStore
from orders_stack import Infra, free_port
from orders_stack.ledger import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

Desk = Callable[..., AbstractAsyncContextManager[OrderDesk]]


def request(user_id: int = 1, quantity: int = 2) -> OrderCreate:
    return OrderCreate.model_validate(
        {"userId": user_id, "productName": "Gaming Laptop", "quantity": quantity, "price": 1299.99}
    )


@pytest.fixture
def settings(test_env: dict[str, str]) -> Callable[..., Settings]:
    """`settings(**overrides)`: the api's settings on this test's topic and key prefix."""

    def make(**overrides: object) -> Settings:
        real: dict[str, object] = {
            "kafka_bootstrap_servers": test_env["KAFKA_BOOTSTRAP_SERVERS"],
            "kafka_orders_topic": test_env["KAFKA_ORDERS_TOPIC"],
            "kafka_dlq_topic": test_env["KAFKA_DLQ_TOPIC"],
            "redis_url": test_env["REDIS_URL"],
            "redis_key_prefix": test_env["REDIS_KEY_PREFIX"],
        }
        return Settings(**{**real, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
def desk(store: OrderStore, settings: Callable[..., Settings]) -> Desk:
    """`async with desk(**settings) as d`: the protocol on a started publisher and this test's store."""

    @asynccontextmanager
    async def running(
        publisher: Callable[[Settings], Publisher] = Publisher, **overrides: object
    ) -> AsyncIterator[OrderDesk]:
        chosen = settings(**overrides)
        sender = publisher(chosen)
        await sender.start()
        try:
            yield OrderDesk(store, sender, chosen)
        finally:
            await sender.stop()

    return running


async def events_of(test_env: dict[str, str], count: int, *, committed_only: bool = False) -> list[Any]:
    records = await read_records(
        test_env["KAFKA_BOOTSTRAP_SERVERS"],
        test_env["KAFKA_ORDERS_TOPIC"],
        count,
        committed_only=committed_only,
    )
    return [((r.key or b"").decode(), json.loads(r.value or b"null")) for r in records]


async def test_a_placed_order_is_in_kafka_and_written_through(
    desk: Desk, store: OrderStore, test_env: dict[str, str]
) -> None:
    async with desk() as d:
        result = await d.place(request())
    assert isinstance(result, Placed)
    assert not result.replayed
    assert result.data == result.order.model_dump(mode="json")
    assert result.data["status"] == "PLACED"
    ((key, event),) = await events_of(test_env, 1)
    assert key == result.order.order_id
    assert event["type"] == "order.placed"
    # Readable at once, before any processor ran ...
    assert (await store.get(key)) == result.order
    # ... and the processor's write of the same event is then a no-op.
    placed = decode_event(json.dumps(event).encode())
    assert isinstance(placed, OrderPlacedEvent)
    replay = await store.create(placed.data.to_order(), placed.id)
    assert not replay.applied
    assert not replay.created
    assert len(await store.history(key)) == 1


async def test_an_idempotency_key_gives_the_same_order_per_owner_and_body(
    desk: Desk, store: OrderStore
) -> None:
    async with desk() as d:
        first = await d.place(request(), "checkout-1")
        assert isinstance(first, Placed)
        assert not first.replayed
        again = await d.place(request(), "checkout-1")
        other_body = await d.place(request(quantity=3), "checkout-1")
        other_owner = await d.place(request(), "checkout-1", owner="customer:7")
        await store.transition(first.order.order_id, OrderStatus.PROCESSING)
        later = await d.place(request(), "checkout-1")
    assert isinstance(again, Placed)
    assert again.replayed
    assert again.order.order_id == first.order.order_id
    assert isinstance(other_body, KeyReused)
    assert isinstance(other_owner, Placed)
    assert not other_owner.replayed
    assert other_owner.order.order_id != first.order.order_id
    # The order as it is now, once it moved on.
    assert isinstance(later, Placed)
    assert later.replayed
    assert later.order.order_id == first.order.order_id
    assert later.data["status"] == "PROCESSING"
    assert await store.count(store.keys.all_orders) == 2


async def test_kafka_down_is_unavailable_and_nothing_is_written(desk: Desk, store: OrderStore) -> None:
    down = {"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "kafka_send_timeout_ms": 500}
    async with desk(**down) as d:
        one = await d.place(request())
        keyed = await d.place(request(), "checkout-2")
        batch = await d.place_batch([request(), request(user_id=2)])
    assert isinstance(one, Unavailable)
    assert "connect" in one.reason
    assert isinstance(keyed, Unavailable)
    assert isinstance(batch, Unavailable)
    assert await store.count(store.keys.all_orders) == 0


async def test_unacknowledged_events_are_abandoned_before_unavailable(
    desk: Desk, infra: Infra, store: OrderStore, test_env: dict[str, str]
) -> None:
    async with desk(kafka_send_timeout_ms=500) as d:
        assert isinstance(await d.place(request()), Placed)  # connected
        infra.kafka.signal(signal.SIGSTOP)  # Kafka hangs with the event in flight
        try:
            refused = await d.place(request(user_id=2))
        finally:
            infra.kafka.signal(signal.SIGCONT)
        assert isinstance(refused, Unavailable)
        events = await events_of(test_env, 2)
    (late,) = [OrderPlacedEvent.model_validate(e) for _, e in events if e["data"]["userId"] == 2]
    assert (await store.create(late.data.to_order(), late.id)).abandoned  # what the processor does
    assert await store.count(partial(store.keys.by_user, 2)) == 0


class _HeldButLate(Publisher):
    """Kafka takes the records, the processor applies them, and only then does the wait time out:
    what a slow acknowledgment looks like to the api."""

    def __init__(self, settings: Settings, store: OrderStore) -> None:
        super().__init__(settings)
        self.store = store

    async def publish(self, key: str, value: bytes, headers: Headers | None = None) -> None:
        await super().publish(key, value, headers)
        await self._processed([value])

    async def publish_all(
        self, messages: Sequence[tuple[str, bytes]], headers: Headers | None = None
    ) -> None:
        await super().publish_all(messages, headers)
        await self._processed([value for _, value in messages])

    async def _processed(self, values: list[bytes]) -> None:
        for value in values:
            event = decode_event(value)
            assert isinstance(event, OrderPlacedEvent)
            await self.store.create(event.data.to_order(), event.id)
        raise KafkaUnavailable("Kafka did not acknowledge in time", maybe_sent=True)


async def test_orders_kafka_held_after_all_are_placed(desk: Desk, store: OrderStore) -> None:
    async with desk(publisher=lambda settings: _HeldButLate(settings, store)) as d:
        one = await d.place(request())
        batch = await d.place_batch([request(user_id=2), request(user_id=3)])
    assert isinstance(one, Placed)
    assert isinstance(batch, BatchPlaced)
    assert [p.order.user_id for p in batch.orders] == [2, 3]
    assert await store.count(store.keys.all_orders) == 3


async def test_a_batch_is_placed_whole(desk: Desk, store: OrderStore, test_env: dict[str, str]) -> None:
    async with desk() as d:
        result = await d.place_batch([request(user_id=n) for n in range(1, 21)])
    assert isinstance(result, BatchPlaced)
    assert [p.order.user_id for p in result.orders] == list(range(1, 21))
    assert all(p.data == p.order.model_dump(mode="json") and not p.replayed for p in result.orders)
    events = await events_of(test_env, 20, committed_only=True)
    assert {key for key, _ in events} == {p.order.order_id for p in result.orders}
    for placed in result.orders:  # written through, each with its own event
        assert await store.get(placed.order.order_id) == placed.order


async def test_a_cancel_is_decided_in_redis_and_then_announced(
    desk: Desk, store: OrderStore, test_env: dict[str, str]
) -> None:
    async with desk() as d:
        first, second = [await d.place(request()) for _ in range(2)]
        assert isinstance(first, Placed)
        assert isinstance(second, Placed)
        await store.transition(second.order.order_id, OrderStatus.PROCESSING)  # as the processor would
        cancelled = await d.cancel(first.order.order_id)
        again = await d.cancel(first.order.order_id)
        too_late = await d.cancel(second.order.order_id)
        unknown = await d.cancel("0193c0de-0000-7000-8000-000000000000")
    assert isinstance(cancelled, Cancelled)
    assert cancelled.applied
    assert cancelled.published
    assert cancelled.order.status is OrderStatus.CANCELLED
    assert cancelled.order.cancelled_at
    assert isinstance(again, Cancelled)
    assert not again.applied
    assert not again.published
    assert too_late == TooLate(OrderStatus.PROCESSING)
    assert isinstance(unknown, NotFound)
    events = await events_of(test_env, 3)
    assert [e["type"] for key, e in events if key == first.order.order_id] == [
        "order.placed",
        "order.cancelled",
    ]
    # The processor replays the cancel: it changes nothing.
    assert not (await store.transition(first.order.order_id, OrderStatus.CANCELLED)).applied


async def test_a_cancel_stands_when_kafka_cannot_take_its_event(
    desk: Desk, infra: Infra, store: OrderStore
) -> None:
    async with desk(kafka_send_timeout_ms=500) as d:
        placed = await d.place(request())
        assert isinstance(placed, Placed)
        infra.kafka.signal(signal.SIGSTOP)
        try:
            cancelled = await d.cancel(placed.order.order_id)
        finally:
            infra.kafka.signal(signal.SIGCONT)
    assert isinstance(cancelled, Cancelled)
    assert cancelled.applied
    assert not cancelled.published
    current = await store.get(placed.order.order_id)
    assert current is not None
    assert current.status is OrderStatus.CANCELLED
