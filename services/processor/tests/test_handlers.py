"""The order handlers without Kafka: records and decoded events handed to them directly, against
the real Redis; the dead letters they send land in a list."""

import json
import re
from collections.abc import Callable

import pytest
from aiokafka import ConsumerRecord
from redis.exceptions import ResponseError

from orders_contract.events import (
    EventError,
    OrderCancelledEvent,
    decode_event,
    encode_cancelled,
    encode_placed,
)
from orders_contract.models import Order, utc_now
from orders_contract.models import OrderStatus as S
from orders_processor.consumer import Record
from orders_processor.handlers import OrderHandlers
from orders_processor.metrics import HandlerMetrics, current_value
from orders_readmodel.store import OrderStore
from orders_web.metrics import ServiceMetrics

pytestmark = pytest.mark.redis


class DeadLetters:
    """The dead letters sent, in memory: (record, reason)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Record, str]] = []

    async def send(self, record: Record, reason: str) -> None:
        self.sent.append((record, reason))


def record(value: bytes, key: str | None, offset: int = 0) -> Record:
    return ConsumerRecord("orders", 0, offset, 0, 0, key.encode() if key else None, value, None, 0, 0, ())


def handlers(store: OrderStore, letters: DeadLetters, reject: str | None = None) -> OrderHandlers:
    pattern = re.compile(reject) if reject else None
    return OrderHandlers(store, letters, HandlerMetrics(ServiceMetrics("processor")), reject=pattern)


async def statuses(store: OrderStore, order: Order) -> list[S]:
    return [h.status for h in await store.history(order.order_id)]


async def test_a_placed_event_takes_the_order_to_completed_once(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    letters = DeadLetters()
    h = handlers(store, letters)
    order = new_order()
    placed = record(encode_placed(order), order.order_id)
    await h.handle(placed)
    await h.handle(placed)  # a replay
    assert await statuses(store, order) == [S.PLACED, S.PROCESSING, S.COMPLETED]
    assert (current_value(h.metrics.completed), current_value(h.metrics.replayed)) == (1, 1)
    assert letters.sent == []


async def test_a_cancelled_order_stays_cancelled_and_an_abandoned_event_creates_nothing(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    h = handlers(store, DeadLetters())
    cancelled, abandoned = new_order(), new_order()
    await store.create(cancelled)
    await store.transition(cancelled.order_id, S.CANCELLED)
    assert not await store.abandon([(abandoned.order_id, "event-503")], ttl_s=60)
    await h.placed(cancelled, "e1")
    await h.placed(abandoned, "event-503")
    assert await statuses(store, cancelled) == [S.PLACED, S.CANCELLED]
    assert await store.get(abandoned.order_id) is None
    assert (current_value(h.metrics.found_cancelled), current_value(h.metrics.abandoned)) == (1, 1)


async def test_a_cancellation_is_replayed_and_an_impossible_one_refused(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    h = handlers(store, DeadLetters())
    placed, done = new_order(), new_order()
    await store.create(placed)
    await h.placed(done)

    def cancellation(order: Order) -> OrderCancelledEvent:
        event = decode_event(encode_cancelled(order.order_id, utc_now()))
        assert isinstance(event, OrderCancelledEvent)
        return event

    await h.cancelled(cancellation(placed))
    await h.cancelled(cancellation(placed))  # the api's own, replayed: nothing more
    assert await statuses(store, placed) == [S.PLACED, S.CANCELLED]
    with pytest.raises(EventError, match="impossible transition"):
        await h.cancelled(cancellation(done))
    assert current_value(h.metrics.cancelled) == 1


async def test_bad_records_are_dead_lettered_with_their_reason(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    letters = DeadLetters()
    h = handlers(store, letters, reject="^Rejected")
    order, rejected, other = new_order(), new_order(name="Rejected thing"), new_order()
    envelope = json.loads(encode_placed(order))
    bad = [
        record(b"not json at all", order.order_id, 0),
        record(json.dumps({**envelope, "type": "order.teleported"}).encode(), order.order_id, 1),
        record(encode_placed(order), other.order_id, 2),  # the key is another order's
        record(encode_placed(rejected), rejected.order_id, 3),
        record(encode_cancelled(order.order_id, utc_now()), order.order_id, 4),  # an unknown order
    ]
    for each in bad:
        await h.handle(each)
    assert [r for r, _ in letters.sent] == bad
    reasons = [reason for _, reason in letters.sent]
    assert "type" in reasons[1]
    assert reasons[2] == "record key differs from the event's subject"
    assert reasons[3].startswith("rejected by fault injection")
    assert reasons[4].startswith("impossible transition")
    assert current_value(h.metrics.dead_lettered) == len(bad)
    assert current_value(h.metrics.dead_letters, reason="impossible transition") == 1
    assert await store.get(order.order_id) is None


async def test_transient_errors_are_raised_for_the_caller_to_retry(
    store: OrderStore, new_order: Callable[..., Order]
) -> None:
    """A Redis error is no reason to dead-letter: the record is handled again later."""
    letters = DeadLetters()
    order = new_order()
    await store.create(order)

    class Refusing(OrderStore):
        async def transition(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise ResponseError("OOM command not allowed")

    refusing = handlers(Refusing(store.redis, store.keys), letters)
    with pytest.raises(ResponseError):
        await refusing.handle(record(encode_cancelled(order.order_id, utc_now()), order.order_id))
    assert letters.sent == []
    assert current_value(refusing.metrics.redis_errors) == 1
